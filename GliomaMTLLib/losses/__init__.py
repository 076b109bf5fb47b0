"""GliomaMTLLib.losses."""
