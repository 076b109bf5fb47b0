"""Everything the 3D Slicer panel (``GliomaMTL/GliomaMTL.py``) relies on, without Slicer.

The panel only wires widgets and MRML nodes; the decisions it takes live here so that pytest can
check them on a machine without Slicer:

- :mod:`.naming`: which scene node is which MR sequence (BraTS names and aliases);
- :mod:`.exchange`: the files a job reads and writes (names, folders);
- :mod:`.commands`: the child-process command lines of the engine's CLI;
- :mod:`.jobs`: a child process read without blocking, its progress events, cancel (process tree);
- :mod:`.results`: ``report.json`` / ``explain.json`` / model versions -> table rows, checked;
- :mod:`.segments`: segment names, colours and standard terminology of the label values;
- :mod:`.models`: the models and versions the panel can offer, and the sequences each needs;
- :mod:`.dependencies`: which Python packages to install into Slicer, and which never to replace.

Nothing here imports slicer, qt, ctk, vtk, torch, SimpleITK or numpy: the panel can load and ask
for the first-use install before any engine dependency exists in Slicer's Python.
"""
