"""GliomaMTLLib.nets."""
