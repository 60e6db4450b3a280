"""What people read: Markdown tables of evaluations, sweeps and benchmarks."""
