"""The data manager: what is stored (coverage) and what is missing (gaps, over the
market hours of sptrader.sessions), the re-fetches owed, and export/import of bars."""
