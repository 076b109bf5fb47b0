"""GliomaMTLLib.preprocess."""
