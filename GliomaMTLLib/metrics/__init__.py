"""GliomaMTLLib.metrics."""
