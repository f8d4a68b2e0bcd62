"""Reading and writing the presence tables (asyncpg): one module per table (I/O)."""
