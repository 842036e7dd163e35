from momently.cli import main

main()
