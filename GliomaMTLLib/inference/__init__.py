"""GliomaMTLLib.inference."""
