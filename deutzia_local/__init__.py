"""The local stack: Deutzia's real code against emulated AWS on one machine (moto, a CloudTrail recorder, DuckDB)."""
