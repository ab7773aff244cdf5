"""Reports: the bench's summary and BENCHMARKS.md row (report.bench), the runner's summary (report.run)."""
