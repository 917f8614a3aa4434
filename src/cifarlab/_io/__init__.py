"""File plumbing, one concern a module; import each name from the submodule that holds it.

`atomic` (atomic writes, NoSpaceError), `locks` (directory locks), `digest` (content checksums), `cache_file`
(checked cache files) and `errors` (one-line error text).
"""
