"""One trial: build, compile, fit (one phase, or freeze-then-fine-tune), evaluate on validation."""
