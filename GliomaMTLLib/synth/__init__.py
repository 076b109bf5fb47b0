"""GliomaMTLLib.synth."""
