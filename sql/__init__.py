"""The numbered SQLite migrations (`NNN_name.sql`), shipped as package data; see app/db.py."""
