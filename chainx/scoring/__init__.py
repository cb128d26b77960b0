"""The torch side, and the only package that imports torch: scoring model, optimisation,
importance baselines and activation maximisation. Importing this package loads no torch;
its modules do."""
