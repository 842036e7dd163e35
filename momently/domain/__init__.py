"""Pure data and rules: no I/O, no clock reads, no database. Every function here is a
function of its arguments, which is what lets the rules be pinned by table-driven and
property tests."""
