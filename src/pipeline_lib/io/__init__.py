"""Files: atomic writes and the one error type a user can fix. Imports nothing of the library."""
