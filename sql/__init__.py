"""The numbered SQLite migrations (`NNN_name.sql`), shipped as package data; see app/storage/db.py."""
