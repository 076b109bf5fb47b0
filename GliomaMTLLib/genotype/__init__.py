"""Genotype you can trust: the radiological-feature path (issue 12).

* :mod:`~GliomaMTLLib.genotype.features`: named, differentiable radiological features of a crop;
* :mod:`~GliomaMTLLib.genotype.context`: where the crop lies in the brain (location maps);
* :mod:`~GliomaMTLLib.genotype.model`: standardization, logistic regression, calibration, OOD
  distance, stored as numbers in ``model.json``;
* :mod:`~GliomaMTLLib.genotype.path`: the path plugged into ``inference.task_logits``;
* :mod:`~GliomaMTLLib.genotype.fit`: fitting rules (scikit-learn), "not learned" status;
* :mod:`~GliomaMTLLib.genotype.collect`: phantoms -> the model's own predictions, cached.

Imports nothing heavy at package level.
"""
