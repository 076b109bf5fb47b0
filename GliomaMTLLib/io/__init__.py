"""GliomaMTLLib.io."""
