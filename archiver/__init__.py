"""PostgreSQL -> MinIO (or a local folder): archive whole months older than the retention."""
