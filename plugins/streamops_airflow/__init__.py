"""Airflow adapters over streamops (thin: parse params, call one streamops function, log)."""
