"""GliomaMTL: glioma segmentation, genotype, explanation and fine-tuning in 3D Slicer.

This module is a thin layer over the engine (``GliomaMTLLib``): the widget wires the panel, the
logic moves nodes to files and back, and every computation runs in a child process (Slicer's
Python running ``python -m GliomaMTLLib``), read without blocking the GUI. What the panel decides
(which node is which sequence, command lines, progress parsing, result tables, segment names and
terminology, dependency lists) lives in ``GliomaMTLLib.slicer_bridge`` and is tested with pytest.
"""

import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def engineRoot() -> Path:
    """Folder that holds ``GliomaMTLLib``: beside this file in a built extension (CMake installs the
    engine and the model bundles next to the module), the repository root in development mode
    ("Add module path" pointing at ``GliomaMTL/``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "GliomaMTLLib" / "__init__.py").is_file():
            return candidate
    raise RuntimeError(f"GliomaMTLLib not found beside {here} or in {here.parent}; reinstall the extension")


if str(engineRoot()) not in sys.path:
    sys.path.insert(0, str(engineRoot()))

# Slicer-free helpers: importing them needs none of the engine's heavy dependencies.
from GliomaMTLLib.labels import GENOTYPE_TASKS, SEQUENCES  # noqa: E402
from GliomaMTLLib.slicer_bridge import commands, dependencies, models, results  # noqa: E402
from GliomaMTLLib.slicer_bridge.exchange import JobFiles  # noqa: E402
from GliomaMTLLib.slicer_bridge.jobs import ChildJob  # noqa: E402
from GliomaMTLLib.slicer_bridge.naming import (  # noqa: E402
    assign_sequences,
    reference_sequence,
    safe_case_id,
    sequence_of_name,
)
from GliomaMTLLib.slicer_bridge.segments import segment_specs  # noqa: E402

#: Sample case shipped with the module (a synthetic 3 mm phantom, no download): file, SHA256.
SAMPLE_NAME = "GliomaMTLSample"
SAMPLE_FILES = {
    "t1n": ("GliomaMTLSample-t1n.nrrd", "ffe42f3cea287506ca391e9d71a87ae89668af71f8992273298c34f6bf0ec7ec"),
    "t1c": ("GliomaMTLSample-t1c.nrrd", "42ee510e7ebe87ad850561c9ff6469a8665c287673df577bf636611021b02057"),
    "t2w": ("GliomaMTLSample-t2w.nrrd", "45041b5209c6350122ded0c368c2143099e7072714bdf718f1f1e62e231ee059"),
    "t2f": ("GliomaMTLSample-t2f.nrrd", "04aa40dacd67d7ac48e733d6c228701d4c28bbe8005df4476e85498cf1e29ad2"),
}
REGION_TASKS = ("WT", "TC", "ET")
POLL_INTERVAL_MS = 200
HEATMAP_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeRainbow")
#: Largest difference (mm) tolerated between a result's grid read from a file and the reference
#: volume's grid before the result is placed on the reference's exact geometry.
GEOMETRY_TOLERANCE_MM = 1e-3


#
# Module
#


class GliomaMTL(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GliomaMTL")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["GliomaMTL developers"]
        self.parent.helpText = _(
            "Segments a glioma on four co-registered, skull-stripped MR sequences (T1, T1 post-contrast, T2, "
            "FLAIR) into necrotic core, edema and enhancing tumor, measures the volumes and predicts the genotype "
            "(IDH, 1p/19q; BRAF with the pediatric model) with probabilities. Integrated-gradient heatmaps show "
            "which voxels drove a prediction. Corrections made in Segment Editor are stored and fine-tune new model "
            "versions, which can be switched and rolled back.<br><br>"
            "<b>Not for clinical use.</b> The shipped weights are trained on synthetic phantoms only. Their model "
            "cards (Resources/Models/*/card.md) give the measured accuracy; genotype tasks the card marks as not "
            "learned are shown as not available. Probabilities are calibrated on synthetic validation data only.<br>"
            "Documentation: see the README of the GliomaMTL repository."
        )
        self.parent.acknowledgementText = _(
            "GliomaMTL builds on MONAI, PyTorch, captum, SimpleITK and slicerio. Its panel follows the patterns of "
            "the MONAIAuto3DSeg and TotalSegmentator extensions."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def sampleDataFolder() -> Path:
    return Path(__file__).resolve().parent / "Resources" / "SampleData"


def registerSampleData():
    """Register the shipped sample case (four local files) in the Sample Data module."""
    import SampleData

    folder = sampleDataFolder()
    files = [SAMPLE_FILES[s][0] for s in SEQUENCES]
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="GliomaMTL",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "GliomaMTL.png"),
        uris=[(folder / f).as_uri() for f in files],
        fileNames=files,
        nodeNames=[f"{SAMPLE_NAME}-{s}" for s in SEQUENCES],
        checksums=[f"SHA256:{SAMPLE_FILES[s][1]}" for s in SEQUENCES],
        loadFileType=["VolumeFile"] * len(files),
    )


#
# Parameter node
#


@parameterNodeWrapper
class GliomaMTLParameterNode:
    """State of the panel, saved with the scene.

    t1n, t1c, t2w, t2f: input volumes. outputSegmentation: the result (created when empty).
    modelId: ``NAME@VERSION`` of the chosen model version. device: auto, cpu or cuda.
    testTimeFlips: model default (the shipped models: on a GPU only), on or off.
    heatmap: the heatmap volume shown. caseId: id of the case in the job files and the store.
    predictionFile: label map the engine predicted for the current case (for the correction store).
    patientAge: age at the scan in years, -1 when unknown (an input of age-aware genotype models).
    """

    t1n: vtkMRMLScalarVolumeNode
    t1c: vtkMRMLScalarVolumeNode
    t2w: vtkMRMLScalarVolumeNode
    t2f: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    heatmap: vtkMRMLScalarVolumeNode
    modelId: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    testTimeFlips: Annotated[str, Choice(["model default", "on", "off"])] = "model default"
    explainSteps: Annotated[int, WithinRange(2, 256)] = 32
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    finetuneIterations: Annotated[int, WithinRange(1, 100000)] = 50
    caseId: str = ""
    predictionFile: str = ""
    patientAge: Annotated[int, WithinRange(-1, 120)] = -1


#
# Widget
#


class GliomaMTLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires widgets to the logic; no computation here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choices = []
        self._lastReport = None
        self._cohortCases = []
        self._cohortNodes = []
        self._explanation = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GliomaMTL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = GliomaMTLLogic()
        self.logic.logCallback = self.appendLog

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.autoFillButton.connect("clicked(bool)", self.onAutoFill)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.explainButton.connect("clicked(bool)", self.onExplain)
        self.ui.explainSequenceSelector.connect("currentIndexChanged(int)", self.onHeatmapSequenceChanged)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.onHeatmapOpacityChanged)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditSegmentation)
        self.ui.saveCorrectionButton.connect("clicked(bool)", self.onSaveCorrection)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.refreshVersionsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.useVersionButton.connect("clicked(bool)", self.onUseVersion)
        self.ui.rollbackButton.connect("clicked(bool)", self.onRollback)
        self.ui.cohortRunButton.connect("clicked(bool)", self.onCohortRun)
        self.ui.cohortLoadButton.connect("clicked(bool)", self.onCohortLoad)
        self.ui.cohortNextButton.connect("clicked(bool)", lambda: self.onCohortStep(1))
        self.ui.cohortPreviousButton.connect("clicked(bool)", lambda: self.onCohortStep(-1))
        self.ui.cohortCaseList.connect("itemDoubleClicked(QListWidgetItem*)", lambda item: self.onCohortLoad())
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)

        for combo, task in ((self.ui.idhSelector, "idh"), (self.ui.codelSelector, "codel_1p19q"),
                            (self.ui.brafSelector, "braf")):
            combo.addItem(_("unknown"), "")
            for cls in GENOTYPE_TASKS[task]:
                combo.addItem(cls, cls)

        self.ui.progressBar.setValue(0)
        self.ui.caveatLabel.setText(results.CALIBRATION_CAVEAT)
        self.refreshModels()
        self.updateDeviceInfo()
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.fillInputsFromNames()

    def setParameterNode(self, inputParameterNode: Optional[GliomaMTLParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.selectModel(self._parameterNode.modelId)
            self.updateButtons()

    # ------------------------------------------------------------------ inputs and models

    def fillInputsFromNames(self) -> None:
        """Fill every empty sequence input from the names of the volumes in the scene."""
        if self._parameterNode:
            self.logic.assignInputsByName(self._parameterNode)

    def onAutoFill(self) -> None:
        self.fillInputsFromNames()

    def refreshModels(self) -> None:
        """Reload the model / version selector and the version table."""
        current = self._parameterNode.modelId if self._parameterNode else ""
        self._choices = self.logic.modelChoices()
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for choice in self._choices:
            self.ui.modelSelector.addItem(choice.title, choice.id)
        self.ui.modelSelector.blockSignals(wasBlocked)
        self.selectModel(current)
        rows = models.version_rows(self._choices)
        self.fillTable(self.ui.versionsTable, rows)

    def selectModel(self, modelId: str) -> None:
        """Select ``modelId``; when it is empty or gone, the active adult version (else the first)."""
        index = self.ui.modelSelector.findData(modelId) if modelId else -1
        if index < 0:
            active = next((c.id for c in self._choices if c.active and c.name == "gliomamtl_adult"), None)
            index = self.ui.modelSelector.findData(active) if active else -1
        if index < 0 and self.ui.modelSelector.count > 0:
            index = 0
        if index >= 0:
            self.ui.modelSelector.setCurrentIndex(index)
            self.onModelChanged(index)

    def currentChoice(self):
        modelId = self.ui.modelSelector.currentData
        return next((c for c in self._choices if c.id == modelId), None)

    def onModelChanged(self, index: int) -> None:
        choice = self.currentChoice()
        if choice is None:
            self.ui.modelInfoLabel.setText(_("No model found: the shipped bundles are missing."))
            return
        if self._parameterNode and self._parameterNode.modelId != choice.id:
            self._parameterNode.modelId = choice.id
        roles = models.sequence_roles(choice)
        labels = {"t1n": self.ui.t1nLabel, "t1c": self.ui.t1cLabel, "t2w": self.ui.t2wLabel, "t2f": self.ui.t2fLabel}
        for seq, label in labels.items():
            label.setText(models.sequence_label(seq, roles[seq]) + ":")
        tasks = ", ".join(choice.tasks) or _("none")
        optional = [s for s in choice.sequences if s not in choice.required_sequences]
        self.ui.modelInfoLabel.setText(_("Needs {sequences}{optional}; genotype tasks: {tasks}. Research use only.").format(
            sequences=", ".join(choice.required_sequences),
            optional=(_(" (reads {names} when given)").format(names=", ".join(optional)) if optional else ""),
            tasks=tasks))
        wasBlocked = self.ui.explainTaskSelector.blockSignals(True)
        self.ui.explainTaskSelector.clear()
        for task in [*choice.tasks, *REGION_TASKS]:
            self.ui.explainTaskSelector.addItem(task)
        self.ui.explainTaskSelector.blockSignals(wasBlocked)
        self.updateButtons()

    def updateDeviceInfo(self, usedDevice: str = "") -> None:
        torchVersion = dependencies.installed_version("torch")
        gpu = shutil.which("nvidia-smi") is not None
        text = (_("PyTorch {version}").format(version=torchVersion) if torchVersion
                else _("PyTorch not installed yet (installed on first run)"))
        text += "; " + (_("NVIDIA driver found") if gpu else _("no NVIDIA driver found: auto runs on the CPU"))
        if usedDevice:
            text += "; " + _("last run used: {device}").format(device=usedDevice)
        self.ui.deviceInfoLabel.setText(text)

    # ------------------------------------------------------------------ job state

    def updateButtons(self, caller=None, event=None) -> None:
        busy = self.logic is not None and self.logic.isBusy()
        node = self._parameterNode
        choice = self.currentChoice()
        ready = bool(node and choice and all(getattr(node, s) for s in choice.required_sequences))
        hasResult = bool(node and node.outputSegmentation and node.caseId)
        self.ui.runButton.enabled = ready and not busy
        self.ui.runButton.toolTip = (_("Runs the engine in a background process") if ready
                                     else _("Select the sequences the model needs"))
        self.ui.explainButton.enabled = ready and not busy
        self.ui.saveCorrectionButton.enabled = ready and hasResult and not busy
        self.ui.editSegmentationButton.enabled = bool(node and node.outputSegmentation)
        self.ui.finetuneButton.enabled = bool(choice) and not busy
        self.ui.useVersionButton.enabled = not busy
        self.ui.rollbackButton.enabled = not busy
        self.ui.cohortRunButton.enabled = bool(choice) and not busy
        self.ui.cancelButton.enabled = busy

    def setProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.setText(message)

    def appendLog(self, text: str) -> None:
        self.ui.logText.appendPlainText(text)

    def startJob(self, start: Callable, what: str) -> None:
        """Run ``start()`` (which launches one job); a second job while one runs is refused."""
        if self.logic.isBusy():
            slicer.util.warningDisplay(_("A job is already running ({kind}). Wait for it or cancel it.").format(
                kind=self.logic.jobKind), windowTitle="GliomaMTL")
            return
        if not self.ensureDependencies():
            return
        try:
            start()
        except Exception as exc:  # input problems before anything is started: one clear message
            logging.exception(what)
            slicer.util.errorDisplay(_("{what} could not start: {error}").format(what=what, error=exc),
                                     windowTitle="GliomaMTL")
        self.updateButtons()

    def jobFinished(self, job: ChildJob, what: str, onSuccess: Callable) -> None:
        """Common end of every job: success runs ``onSuccess``; failure shows the error and its
        details; the scene is changed only in ``onSuccess``."""
        self.updateButtons()
        outcome = job.outcome()
        if outcome == "cancelled":
            self.setProgress(0.0, _("{what}: cancelled").format(what=what))
            return
        if outcome != "done":
            self.setProgress(0.0, _("{what} failed").format(what=what))
            slicer.util.errorDisplay(_("{what} failed: {error}").format(what=what, error=job.error_message()),
                                     windowTitle="GliomaMTL", detailedText=job.details())
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("{what}: the result could not be read").format(what=what),
                                                 waitCursor=True):
                onSuccess(job)
                self.setProgress(1.0, _("{what}: done").format(what=what))
        except Exception:  # shown to the user by tryWithErrorDisplay; the scene keeps its previous state
            logging.exception(what)
        finally:
            self.updateButtons()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.updateButtons()

    def ensureDependencies(self) -> bool:
        if self.logic.dependenciesReady():
            return True
        try:
            with slicer.util.tryWithErrorDisplay(_("Installing Python packages failed"), waitCursor=True):
                installed = self.logic.installDependencies(askConfirmation=True)
        except Exception:  # shown to the user by tryWithErrorDisplay
            logging.exception("dependency installation")
            return False
        self.updateDeviceInfo()
        return installed

    def onInstallDependencies(self) -> None:
        if self.logic.dependenciesReady():
            slicer.util.infoDisplay(_("All Python packages GliomaMTL needs are installed."), windowTitle="GliomaMTL")
            return
        self.ensureDependencies()

    # ------------------------------------------------------------------ run

    def onRun(self) -> None:
        node = self._parameterNode
        self.startJob(lambda: self.logic.predict(
            self.inputNodes(), node.modelId, node.device, age=node.patientAge if node.patientAge >= 0 else None,
            flips=node.testTimeFlips, progressCallback=self.setProgress,
            completedCallback=lambda job: self.jobFinished(job, _("Segmentation"), self.onPredictionDone)),
            _("Segmentation"))

    def inputNodes(self) -> dict:
        return {s: getattr(self._parameterNode, s) for s in SEQUENCES if getattr(self._parameterNode, s)}

    def onPredictionDone(self, job: ChildJob) -> None:
        node = self._parameterNode
        imported = self.logic.importPrediction(job.files, self.inputNodes(), node.outputSegmentation)
        node.outputSegmentation = imported.segmentationNode
        node.caseId = job.files.case_id
        node.predictionFile = str(imported.labelFile)
        self.showReport(imported.report)
        self.updateDeviceInfo(str(imported.report.get("device", "")))

    def showReport(self, report: dict) -> None:
        self._lastReport = report
        rows = results.genotype_rows(report)
        self.fillTable(self.ui.genotypeTable,
                       [[r.task, r.label, r.probability_text, r.note] for r in rows],
                       bold=[i for i, r in enumerate(rows) if r.predicted])
        self.fillTable(self.ui.volumeTable, [[name, f"{ml:.2f}"] for name, ml in results.volume_rows(report)])
        warnings = results.warnings_of(report)
        self.ui.warningsLabel.setText(
            "\n".join(_("Warning: {text}").format(text=w) for w in warnings) if warnings else _("No warnings."))
        self.ui.resultModelLabel.setText(_("Result of {model}. Not for clinical use.").format(
            model=results.model_line(report)))

    @staticmethod
    def fillTable(table, rows, bold=()) -> None:
        table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                item = qt.QTableWidgetItem(str(text))
                item.setToolTip(str(text))
                if i in bold:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                table.setItem(i, j, item)
        table.resizeColumnsToContents()

    # ------------------------------------------------------------------ explain

    def onExplain(self) -> None:
        node = self._parameterNode
        task = self.ui.explainTaskSelector.currentText
        self.startJob(lambda: self.logic.explain(
            self.inputNodes(), node.modelId, task, node.explainSteps, node.device,
            age=node.patientAge if node.patientAge >= 0 else None,
            progressCallback=self.setProgress,
            completedCallback=lambda job: self.jobFinished(job, _("Explanation"), self.onExplainDone)),
            _("Explanation"))

    def onExplainDone(self, job: ChildJob) -> None:
        explanation = self.logic.readExplanation(job.files, job.task, self.inputNodes())
        self._explanation = explanation
        wasBlocked = self.ui.explainSequenceSelector.blockSignals(True)
        self.ui.explainSequenceSelector.clear()
        for key in explanation.heatmaps:
            self.ui.explainSequenceSelector.addItem(key)
        self.ui.explainSequenceSelector.blockSignals(wasBlocked)
        self.ui.deltaLabel.setText(explanation.summary.text())
        default = "combined" if "combined" in explanation.heatmaps else next(iter(explanation.heatmaps), "")
        self.ui.explainSequenceSelector.setCurrentText(default)
        self.onHeatmapSequenceChanged()

    def onHeatmapSequenceChanged(self, index: int = 0) -> None:
        explanation = getattr(self, "_explanation", None)
        key = self.ui.explainSequenceSelector.currentText
        if not explanation or key not in explanation.heatmaps:
            return
        with slicer.util.tryWithErrorDisplay(_("The heatmap could not be shown"), waitCursor=True):
            node = self._parameterNode
            heat = self.logic.showHeatmap(explanation, key, self.inputNodes(), node.heatmapOpacity, node.heatmap)
            node.heatmap = heat

    def onHeatmapOpacityChanged(self, value: float) -> None:
        node = self._parameterNode
        if node and node.heatmap:
            slicer.util.setSliceViewerLayers(foreground=node.heatmap, foregroundOpacity=value)

    # ------------------------------------------------------------------ correct, fine-tune, versions

    def onEditSegmentation(self) -> None:
        node = self._parameterNode
        inputs = self.inputNodes()
        self.logic.openSegmentEditor(node.outputSegmentation, self.logic.displayVolume(inputs) if inputs else None)

    def knownGenotype(self) -> dict:
        return {"idh": self.ui.idhSelector.currentData or "", "codel_1p19q": self.ui.codelSelector.currentData or "",
                "braf": self.ui.brafSelector.currentData or ""}

    def onSaveCorrection(self) -> None:
        node = self._parameterNode
        self.startJob(lambda: self.logic.saveCorrection(
            self.inputNodes(), node.outputSegmentation, node.caseId, node.modelId, self.knownGenotype(),
            store=self.ui.storeDirSelector.currentPath or None, predictionFile=node.predictionFile or None,
            completedCallback=lambda job: self.jobFinished(job, _("Saving the correction"), lambda j: None)),
            _("Saving the correction"))

    def onFinetune(self) -> None:
        node = self._parameterNode
        self.startJob(lambda: self.logic.finetune(
            node.modelId, node.finetuneIterations, store=self.ui.storeDirSelector.currentPath or None,
            progressCallback=self.setProgress,
            completedCallback=lambda job: self.jobFinished(job, _("Fine-tuning"), self.onFinetuneDone)),
            _("Fine-tuning"))

    def onFinetuneDone(self, job: ChildJob) -> None:
        newVersion = (job.state.result or {}).get("version")
        self._parameterNode.modelId = newVersion or self._parameterNode.modelId
        self.refreshModels()

    def selectedVersion(self) -> str:
        row = self.ui.versionsTable.currentRow()
        item = self.ui.versionsTable.item(row, 0) if row >= 0 else None
        return item.text() if item else ""

    def onUseVersion(self) -> None:
        version = self.selectedVersion()
        if not version:
            slicer.util.warningDisplay(_("Select a version in the table first."), windowTitle="GliomaMTL")
            return
        self._parameterNode.modelId = version
        self.startJob(lambda: self.logic.useVersion(
            version, completedCallback=lambda job: self.jobFinished(job, _("Switching version"),
                                                                    lambda j: self.refreshModels())),
            _("Switching version"))

    def onRollback(self) -> None:
        choice = self.currentChoice()
        name = choice.name if choice else None
        self._parameterNode.modelId = ""
        self.startJob(lambda: self.logic.rollback(
            name, completedCallback=lambda job: self.jobFinished(job, _("Rolling back"),
                                                                 lambda j: self.refreshModels())),
            _("Rolling back"))

    # ------------------------------------------------------------------ cohort

    def onCohortRun(self) -> None:
        root, out = self.ui.cohortRootSelector.currentPath, self.ui.cohortOutputSelector.currentPath
        node = self._parameterNode
        self.startJob(lambda: self.logic.predictCohort(
            root, out, node.modelId, node.device, flips=node.testTimeFlips, progressCallback=self.onCohortProgress,
            completedCallback=lambda job: self.jobFinished(job, _("Cohort"), lambda j: self.refreshCohortList())),
            _("Cohort"))

    def onCohortProgress(self, fraction: float, message: str) -> None:
        self.setProgress(fraction, message)
        self.refreshCohortList()

    def refreshCohortList(self) -> None:
        root, out = self.ui.cohortRootSelector.currentPath, self.ui.cohortOutputSelector.currentPath
        current = self.ui.cohortCaseList.currentRow
        self._cohortCases = self.logic.cohortCases(root, out)
        self.ui.cohortCaseList.clear()
        for case in self._cohortCases:
            self.ui.cohortCaseList.addItem(f"{case['name']} ({case['status']})")
        if self._cohortCases:
            self.ui.cohortCaseList.setCurrentRow(min(max(current, 0), len(self._cohortCases) - 1))

    def onCohortStep(self, step: int) -> None:
        if not self._cohortCases:
            self.refreshCohortList()
        if not self._cohortCases:
            return
        row = min(max(self.ui.cohortCaseList.currentRow + step, 0), len(self._cohortCases) - 1)
        self.ui.cohortCaseList.setCurrentRow(row)
        self.onCohortLoad()

    def onCohortLoad(self) -> None:
        row = self.ui.cohortCaseList.currentRow
        if row < 0 or row >= len(self._cohortCases):
            return
        with slicer.util.tryWithErrorDisplay(_("The case could not be loaded"), waitCursor=True):
            for old in self._cohortNodes:
                if old and old.GetScene():
                    slicer.mrmlScene.RemoveNode(old)
            loaded = self.logic.loadCohortCase(self._cohortCases[row])
            self._cohortNodes = [*loaded.inputs.values(), loaded.segmentationNode]
            node = self._parameterNode
            for seq in SEQUENCES:
                setattr(node, seq, loaded.inputs.get(seq))
            node.outputSegmentation = loaded.segmentationNode
            node.caseId = loaded.caseId
            node.predictionFile = str(loaded.labelFile or "")
            node.patientAge = -1  # another patient: the age typed for the previous one must not carry over
            if loaded.report:
                self.showReport(loaded.report)


#
# Logic
#


@dataclass
class ImportedPrediction:
    """What :meth:`GliomaMTLLogic.importPrediction` brought into the scene."""

    segmentationNode: object
    report: dict
    labelFile: Path


@dataclass
class Explanation:
    """An explanation read from ``explain.json``: its summary and heatmap files per sequence."""

    summary: object
    heatmaps: dict
    files: Optional[JobFiles] = None


@dataclass
class LoadedCase:
    """A cohort case loaded into the scene."""

    caseId: str
    inputs: dict
    segmentationNode: object
    report: Optional[dict]
    labelFile: Optional[Path]


def childPython() -> tuple:
    """``(interpreter, useStartupEnvironment)`` for the engine's child process: the PythonSlicer
    launcher (which sets up Slicer's Python environment itself) when found, else this Python."""
    launcher = shutil.which("PythonSlicer")
    if launcher:
        return launcher, True
    return sys.executable, False


class GliomaMTLLogic(ScriptedLoadableModuleLogic):
    """Nodes in, engine jobs in child processes, results back into the scene. Usable from the
    Python console without the panel::

        logic = slicer.util.getModuleLogic("GliomaMTL")
        job = logic.predict({"t1n": n1, "t1c": n2, "t2w": n3, "t2f": n4}, "gliomamtl_adult", "cpu",
                            waitForCompletion=True)
        imported = logic.importPrediction(job.files, inputs, None)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None
        self.jobKind = ""
        self.timer = None
        self.logCallback = None
        #: Extra environment of every child (the self-test points GLIOMAMTL_DATA at a temporary folder).
        self.environment = {}
        self.workFolders = []

    def getParameterNode(self) -> GliomaMTLParameterNode:
        return GliomaMTLParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    # ------------------------------------------------------------------ inputs

    def assignInputsByName(self, parameterNode: GliomaMTLParameterNode) -> None:
        """Fill empty sequence inputs with scene volumes whose names identify the sequence."""
        volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not n.IsA("vtkMRMLLabelMapVolumeNode") and n.GetHideFromEditors() == 0]
        byName = {n.GetName(): n for n in volumes}
        current = {s: (getattr(parameterNode, s).GetName() if getattr(parameterNode, s) else None) for s in SEQUENCES}
        for seq, name in assign_sequences(list(byName), current).items():
            setattr(parameterNode, seq, byName[name])

    def modelChoices(self) -> list:
        """Shipped models and the registry's versions (the registry of ``self.environment`` when set)."""
        data = self.environment.get("GLIOMAMTL_DATA")
        return models.list_choices(Path(data) / "models" if data else None)

    def modelChoice(self, modelId: str):
        choice = next((c for c in self.modelChoices() if c.id == modelId), None)
        if choice is None:
            raise ValueError(_("model version {id} is not installed").format(id=modelId))
        return choice

    def checkInputs(self, inputs: dict, modelId: str) -> tuple:
        """Reference volume and case id for the inputs; raises naming the missing sequences."""
        choice = self.modelChoice(modelId)
        missing = [s for s in choice.required_sequences if s not in inputs or inputs[s] is None]
        if missing:
            raise ValueError(_("{model} needs the sequences {missing}: select them in Inputs").format(
                model=choice.id, missing=", ".join(missing)))
        used = {s: n for s, n in inputs.items() if n is not None and s in choice.sequences}
        transforms = {n.GetTransformNodeID() for n in used.values()}
        if len(transforms) > 1:
            raise ValueError(_("the input volumes are under different transforms; harden the transforms first"))
        reference = used[reference_sequence(used)]
        return used, reference, safe_case_id(reference.GetName())

    def writeInputs(self, inputs: dict, caseId: str) -> JobFiles:
        """Write the volumes to a new job folder, with Slicer's own writer (NRRD keeps the exact
        IJK-to-RAS); the engine reads them and writes its outputs on the same grid."""
        root = Path(slicer.util.tempDirectory("GliomaMTL"))
        self.workFolders.append(root)
        files = JobFiles(root, caseId)
        files.input_dir.mkdir(parents=True, exist_ok=True)
        for seq, node in inputs.items():
            self.writeVolume(node, files.input_file(seq))
        return files

    @staticmethod
    def writeVolume(node, path: Path) -> None:
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.UseCompressionOff()
        if not storage.WriteData(node):
            raise OSError(_("could not write {node} to {path}").format(node=node.GetName(), path=path))

    # ------------------------------------------------------------------ dependencies

    def missingDependencies(self) -> tuple:
        """``(torch missing, other missing requirements)`` in Slicer's Python."""
        torchMissing = not dependencies.is_satisfied(dependencies.installed_version("torch"),
                                                     dependencies.parse_requirement(dependencies.TORCH_REQUIREMENT)[1])
        return torchMissing, dependencies.missing_requirements(dependencies.ENGINE_REQUIREMENTS,
                                                               dependencies.installed_version)

    def dependenciesReady(self) -> bool:
        torchMissing, missing = self.missingDependencies()
        return not torchMissing and not missing

    @staticmethod
    def pyTorchUtilsLogic():
        """The SlicerPyTorch extension's logic, or None when the extension is not installed."""
        try:
            import PyTorchUtils
        except ImportError:
            return None
        return PyTorchUtils.PyTorchUtilsLogic()

    def installDependencies(self, askConfirmation: bool = True, torchBackend: Optional[str] = None) -> bool:
        """Install what is missing after one confirmation; Slicer's numpy, SimpleITK and VTK are pinned
        by a constraints file so that pip never replaces them. Returns True when all is installed."""
        torchMissing, missing = self.missingDependencies()
        if not torchMissing and not missing:
            return True
        torchUtils = self.pyTorchUtilsLogic() if torchMissing else None
        backend = torchBackend or ("cu126" if shutil.which("nvidia-smi") else "cpu")
        text = dependencies.confirmation_text(missing, torchMissing, torchUtils is not None)
        if torchMissing and torchUtils is None:
            text += "\n" + _("PyTorch build: {backend}").format(backend=backend)
        if askConfirmation and not slicer.app.testingEnabled():
            if not slicer.util.confirmOkCancelDisplay(text, "GliomaMTL", detailedText=text):
                return False
        if torchMissing:
            if torchUtils is not None:
                self.log("Installing PyTorch through the PyTorch extension")
                torchUtils.installTorch(askConfirmation=False, torchVersionRequirement=">=2.2")
            else:
                self.log(f"Installing PyTorch ({backend}) with pip")
                slicer.util.pip_install(dependencies.torch_pip_args(backend))
        if missing:
            constraints = Path(slicer.util.tempDirectory("GliomaMTL")) / "constraints.txt"
            constraints.write_text(dependencies.constraints_text())
            self.log("Installing " + " ".join(missing))
            slicer.util.pip_install(dependencies.pip_install_args(missing, str(constraints)))
        return self.dependenciesReady()

    # ------------------------------------------------------------------ jobs

    def isBusy(self) -> bool:
        return self.job is not None and not self.job.finished

    def startJob(self, kind: str, command: list, device: str = "auto", expectsDone: bool = True,
                 files: Optional[JobFiles] = None, progressCallback: Optional[Callable] = None,
                 completedCallback: Optional[Callable] = None, waitForCompletion: bool = False,
                 task: str = "") -> ChildJob:
        """Start one engine command in a child process and follow it without blocking.

        A second job while one runs is refused (RuntimeError). ``completedCallback(job)`` runs on
        the GUI thread when the job ends (done, error or cancelled); with ``waitForCompletion`` this
        call returns only then (console scripts, self-test).
        """
        if self.isBusy():
            raise RuntimeError(_("a job is already running ({kind})").format(kind=self.jobKind))
        environment = {**commands.child_environment(device), **self.environment}
        startupEnvironment = childPython()[1]
        self.log(f"{kind}: {commands.describe(command)}")
        process = slicer.util.launchConsoleProcess(command, useStartupEnvironment=startupEnvironment,
                                                   updateEnvironment=environment, cwd=str(commands.engine_cwd()))
        job = ChildJob(process, expects_done=expectsDone, command=command)
        job.files = files
        job.task = task
        self.job, self.jobKind = job, kind
        self._progressCallback, self._completedCallback = progressCallback, completedCallback
        if waitForCompletion:
            while not job.finished:
                self._drain(job)
                slicer.app.processEvents()
                time.sleep(0.05)
            self._finish(job)
        else:
            self.timer = qt.QTimer()
            self.timer.setInterval(POLL_INTERVAL_MS)
            self.timer.connect("timeout()", self._poll)
            self.timer.start()
        return job

    def _drain(self, job: ChildJob) -> None:
        for event in job.poll():
            if event.get("event") == "progress" and self._progressCallback:
                self._progressCallback(job.state.fraction, job.state.message)
            elif event.get("event") == "log":
                self.log(str(event.get("message", "")))

    def _poll(self) -> None:
        job = self.job
        if job is None:
            return
        self._drain(job)
        if job.finished:
            self._drain(job)
            self._finish(job)

    def _finish(self, job: ChildJob) -> None:
        if self.timer is not None:
            self.timer.stop()
            self.timer = None
        for line in list(job.state.log)[-20:]:
            logging.debug(line)
        self.log(f"{self.jobKind}: {job.outcome()}")
        callback = self._completedCallback
        self._completedCallback = None
        if callback:
            callback(job)

    def cancel(self) -> None:
        """Kill the running job's whole process tree (nothing is imported into the scene)."""
        if self.isBusy():
            self.log(f"{self.jobKind}: cancelling")
            self.job.cancel()
            if self.timer is None:
                return
            self._poll()

    # ------------------------------------------------------------------ predict

    def predict(self, inputs: dict, modelId: str, device: str = "auto", age=None, progressCallback=None,
                completedCallback=None, waitForCompletion: bool = False, flips: str = "model default") -> ChildJob:
        """Segment and classify the case in a child process (outputs in ``job.files``); ``age``: the
        patient's age in years, or None when unknown; ``flips``: test-time flips, "model default", "on"
        or "off"."""
        used, reference, caseId = self.checkInputs(inputs, modelId)
        files = self.writeInputs(used, caseId)
        python = childPython()[0]
        command = commands.predict_command(python, files.input_dir, files.output_dir, model=modelId, device=device,
                                           age=age, flips=flips)
        return self.startJob("predict", command, device, files=files, progressCallback=progressCallback,
                             completedCallback=completedCallback, waitForCompletion=waitForCompletion)

    def importPrediction(self, files: JobFiles, inputs: dict, segmentationNode=None) -> ImportedPrediction:
        """Read ``report.json`` and the label map, and put the labels as named, coloured segments
        with terminology on the reference volume's exact geometry. Everything is read and checked
        before the scene changes."""
        report = results.read_json(files.report_file, "report.json")
        results.genotype_rows(report)
        results.volume_rows(report)
        labelFile = results.output_file(report, "seg", files.seg_file)
        reference = self.referenceVolume(inputs, files)
        specs = segment_specs(results.label_names(report))
        labels = self.readOnReference(labelFile, reference, labelmap=True)
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{reference.GetName()} tumor")
        self.setSegments(segmentationNode, reference, labels, specs)
        self.placeLike(segmentationNode, reference)
        slicer.util.setSliceViewerLayers(background=self.displayVolume(inputs), fit=True)
        return ImportedPrediction(segmentationNode, report, labelFile)

    @staticmethod
    def referenceVolume(inputs: dict, files: Optional[JobFiles] = None):
        """The volume whose grid the engine's outputs lie on: the engine takes the first sequence it
        read (of ``files`` when given, else of ``inputs``) in the order t1n, t1c, t2w, t2f."""
        present = files.written_sequences() if files is not None else [k for k, n in inputs.items() if n is not None]
        return inputs[reference_sequence(present)]

    @staticmethod
    def displayVolume(inputs: dict):
        """Background volume for showing results: T1 post-contrast when present."""
        return inputs.get("t1c") or next(node for node in inputs.values() if node is not None)

    def readOnReference(self, path: Path, reference, labelmap: bool):
        """Voxel array of a result file that lies on the reference's grid (checked), indexed like
        ``slicer.util.arrayFromVolume(reference)``; the temporary node is removed again."""
        properties = {"show": False, "singleFile": True}
        node = slicer.util.loadLabelVolume(str(path), properties) if labelmap else slicer.util.loadVolume(
            str(path), properties)
        try:
            self.checkSameGrid(node, reference, Path(path).name)
            return slicer.util.arrayFromVolume(node).copy()
        finally:
            slicer.mrmlScene.RemoveNode(node)

    @staticmethod
    def checkSameGrid(node, reference, what: str) -> None:
        """Raise unless ``node`` has the reference's dimensions and IJK-to-RAS (within
        :data:`GEOMETRY_TOLERANCE_MM`): a result is never shown shifted or flipped."""
        dims, refDims = node.GetImageData().GetDimensions(), reference.GetImageData().GetDimensions()
        if tuple(dims) != tuple(refDims):
            raise ValueError(_("{what}: grid {dims} differs from the reference volume's {ref}").format(
                what=what, dims=dims, ref=refDims))
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(a)
        reference.GetIJKToRASMatrix(b)
        worst = max(abs(a.GetElement(i, j) - b.GetElement(i, j)) for i in range(3) for j in range(4))
        if worst > GEOMETRY_TOLERANCE_MM:
            raise ValueError(_("{what}: position differs from the reference volume by {mm:.4f} mm").format(
                what=what, mm=worst))

    @staticmethod
    def setSegments(segmentationNode, reference, labels, specs) -> None:
        """Replace the segments of ``specs`` in the node with the label map's voxels, on the
        reference's geometry, named and coloured, with standard terminology."""
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        segmentation = segmentationNode.GetSegmentation()
        for spec in specs:
            if segmentation.GetSegment(spec.segment_id):
                segmentation.RemoveSegment(spec.segment_id)
            segmentation.AddEmptySegment(spec.segment_id, spec.name, list(spec.color))
            segment = segmentation.GetSegment(spec.segment_id)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            slicer.util.updateSegmentBinaryLabelmapFromArray((labels == spec.label).astype("uint8"),
                                                             segmentationNode, spec.segment_id, reference)
        segmentationNode.CreateClosedSurfaceRepresentation()

    @staticmethod
    def placeLike(node, reference) -> None:
        """Same parent transform and subject-hierarchy folder (study) as the reference volume."""
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        parent = shNode.GetItemParent(shNode.GetItemByDataNode(reference))
        shNode.SetItemParent(shNode.GetItemByDataNode(node), parent)

    # ------------------------------------------------------------------ explain

    def explain(self, inputs: dict, modelId: str, task: str, steps: int, device: str = "auto", age=None,
                progressCallback=None, completedCallback=None, waitForCompletion: bool = False) -> ChildJob:
        """Integrated-gradient heatmaps of ``task`` in a child process (with the patient's ``age``, if
        known, so the explained probability is the one the table shows)."""
        used, reference, caseId = self.checkInputs(inputs, modelId)
        files = self.writeInputs(used, caseId)
        command = commands.explain_command(childPython()[0], files.input_dir, files.explain_dir, model=modelId,
                                           task=task, steps=steps, device=device, age=age)
        return self.startJob("explain", command, device, files=files, progressCallback=progressCallback,
                             completedCallback=completedCallback, waitForCompletion=waitForCompletion, task=task)

    def readExplanation(self, files: JobFiles, task: str, inputs: dict) -> Explanation:
        data = results.read_json(files.explain_json, "explain.json")
        summary = results.explain_summary(data)
        heatmaps = results.heatmap_files(data, files.explain_dir, files.case_id, task, list(inputs))
        if not heatmaps:
            raise results.ResultError(_("explain wrote no heatmap file into {folder}").format(folder=files.explain_dir))
        return Explanation(summary, heatmaps, files)

    def showHeatmap(self, explanation: Explanation, key: str, inputs: dict, opacity: float, heatmapNode=None):
        """Load one heatmap onto the reference geometry and show it as the foreground layer."""
        reference = self.referenceVolume(inputs, explanation.files)
        values = self.readOnReference(explanation.heatmaps[key], reference, labelmap=False)
        if heatmapNode is None:
            heatmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "GliomaMTL heatmap")
        heatmapNode.CopyOrientation(reference)
        slicer.util.updateVolumeFromArray(heatmapNode, values)
        heatmapNode.SetName(f"{reference.GetName()} IG {explanation.summary.task} {key}")
        heatmapNode.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        heatmapNode.CreateDefaultDisplayNodes()
        display = heatmapNode.GetDisplayNode()
        for colorId in HEATMAP_COLOR_NODE_IDS:
            if slicer.mrmlScene.GetNodeByID(colorId):
                display.SetAndObserveColorNodeID(colorId)
                break
        high = float(abs(values).max()) or 1.0
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, high)
        display.SetLowerThreshold(0.05 * high)
        display.ApplyThresholdOn()
        slicer.util.setSliceViewerLayers(background=self.displayVolume(inputs), foreground=heatmapNode,
                                         foregroundOpacity=opacity)
        return heatmapNode

    # ------------------------------------------------------------------ corrections, fine-tuning, versions

    def openSegmentEditor(self, segmentationNode, sourceVolume) -> None:
        """Switch to Segment Editor with the result segmentation and a source volume selected."""
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.util.getModuleWidget("SegmentEditor").editor
        editor.setSegmentationNode(segmentationNode)
        if sourceVolume is not None:
            editor.setSourceVolumeNode(sourceVolume)

    def exportCorrection(self, segmentationNode, reference, labelNames: dict, path: Path) -> None:
        """Write the segments as one label map (engine values) on the reference's exact grid."""
        import numpy as np

        labels = np.zeros(slicer.util.arrayFromVolume(reference).shape, dtype=np.uint8)
        segmentation = segmentationNode.GetSegmentation()
        for spec in segment_specs(labelNames):
            segmentId = spec.segment_id if segmentation.GetSegment(spec.segment_id) else \
                segmentation.GetSegmentIdBySegmentName(spec.name)
            if not segmentId:
                continue  # the reader removed this segment: no voxels of that label
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, reference)
            labels[mask > 0] = spec.label
        labelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "GliomaMTL correction")
        try:
            labelNode.CopyOrientation(reference)
            slicer.util.updateVolumeFromArray(labelNode, labels)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writeVolume(labelNode, path)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)

    def saveCorrection(self, inputs: dict, segmentationNode, caseId: str, modelId: str, genotype: dict,
                       store: Optional[str] = None, predictionFile: Optional[str] = None, replace: bool = True,
                       completedCallback=None, waitForCompletion: bool = False) -> ChildJob:
        """Send the edited segmentation (and the known genotype) to the correction store."""
        if segmentationNode is None:
            raise ValueError(_("there is no segmentation to save: run the segmentation first"))
        used, reference, defaultId = self.checkInputs(inputs, modelId)
        files = self.writeInputs(used, caseId or defaultId)
        choice = self.modelChoice(modelId)
        self.exportCorrection(segmentationNode, reference, choice.labels or None, files.correction_file)
        command = commands.correct_command(childPython()[0], files.input_dir, files.correction_file, store=store,
                                           genotype=genotype, replace=replace, model=modelId,
                                           prediction=predictionFile, case_id=files.case_id)
        return self.startJob("correct", command, expectsDone=False, files=files,
                             completedCallback=completedCallback, waitForCompletion=waitForCompletion)

    def finetune(self, modelId: str, iterations: int, store: Optional[str] = None, progressCallback=None,
                 completedCallback=None, waitForCompletion: bool = False) -> ChildJob:
        """Fine-tune a new version from ``modelId`` on the stored corrections (``job.state.result["version"]``)."""
        command = commands.finetune_command(childPython()[0], store=store, from_version=modelId,
                                            iterations=iterations)
        return self.startJob("finetune", command, progressCallback=progressCallback,
                             completedCallback=completedCallback, waitForCompletion=waitForCompletion)

    def useVersion(self, version: str, completedCallback=None, waitForCompletion: bool = False) -> ChildJob:
        command = commands.models_command(childPython()[0], "use", version)
        return self.startJob("models use", command, expectsDone=False, completedCallback=completedCallback,
                             waitForCompletion=waitForCompletion)

    def rollback(self, name: Optional[str], completedCallback=None, waitForCompletion: bool = False) -> ChildJob:
        command = commands.models_command(childPython()[0], "rollback", name)
        return self.startJob("models rollback", command, expectsDone=False, completedCallback=completedCallback,
                             waitForCompletion=waitForCompletion)

    # ------------------------------------------------------------------ cohort

    def predictCohort(self, root: str, out: str, modelId: str, device: str = "auto", progressCallback=None,
                      completedCallback=None, waitForCompletion: bool = False, flips: str = "model default") -> ChildJob:
        """``predict --cohort``: every case folder under ``root`` into ``out`` (done cases are skipped);
        ``flips``: test-time flips, "model default", "on" or "off"."""
        if not root or not Path(root).is_dir():
            raise ValueError(_("choose the folder that holds the case folders"))
        if not out:
            raise ValueError(_("choose an output folder"))
        command = commands.cohort_command(childPython()[0], root, out, model=modelId, device=device, flips=flips)
        return self.startJob("cohort", command, device, progressCallback=progressCallback,
                             completedCallback=completedCallback, waitForCompletion=waitForCompletion)

    @staticmethod
    def cohortCases(root: str, out: str) -> list:
        """Case folders under ``root`` with their status (``done`` when ``out/<case>/report.json`` exists)."""
        if not root or not Path(root).is_dir():
            return []
        cases = []
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
            result = Path(out) / folder.name if out else None
            done = bool(result and (result / "report.json").is_file())
            cases.append({"name": folder.name, "folder": folder, "result": result,
                          "status": _("segmented") if done else _("waiting")})
        return cases

    def loadCohortCase(self, case: dict) -> LoadedCase:
        """Load a cohort case's sequences (identified by file name) and, when done, its segmentation."""
        inputs = {}
        for path in sorted(Path(case["folder"]).iterdir()):
            stem = path.name.split(".")[0]
            seq = sequence_of_name(stem)
            if seq and seq not in inputs and path.is_file():
                inputs[seq] = slicer.util.loadVolume(str(path), {"show": False, "name": stem})
        if not inputs:
            raise ValueError(_("no sequence files recognised in {folder}").format(folder=case["folder"]))
        report, segmentationNode, labelFile = None, None, None
        result = case.get("result")
        if result and (Path(result) / "report.json").is_file():
            report = results.read_json(Path(result) / "report.json", "report.json")
            caseId = str(report.get("case_id") or case["name"])
            labelFile = results.output_file(report, "seg", Path(result) / f"{caseId}_seg.nii.gz")
            reference = self.referenceVolume(inputs)
            labels = self.readOnReference(labelFile, reference, labelmap=True)
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{case['name']} tumor")
            self.setSegments(segmentationNode, reference, labels, segment_specs(results.label_names(report)))
        slicer.util.setSliceViewerLayers(background=self.displayVolume(inputs), fit=True)
        return LoadedCase(safe_case_id(case["name"]), inputs, segmentationNode, report, labelFile)

    def cleanupWorkFolders(self) -> None:
        """Delete the job folders this logic created."""
        for folder in self.workFolders:
            shutil.rmtree(folder, ignore_errors=True)
        self.workFolders = []


#
# Test
#


class GliomaMTLTest(ScriptedLoadableModuleTest):
    """The whole flow on the shipped sample case: predict, explain, correct, fine-tune (tiny),
    switch version and roll back, in a temporary data folder (store and registry)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_NodeNameMatching()
        self.setUp()
        self.test_FullFlow()

    def test_NodeNameMatching(self):
        self.delayDisplay("Node names to sequences")
        self.assertEqual(sequence_of_name("BraTS20_Training_001_t1ce"), "t1c")
        self.assertEqual(sequence_of_name(f"{SAMPLE_NAME}-t2f"), "t2f")
        self.assertIsNone(sequence_of_name("BraTS-GLI-00000-000-seg"))

    def loadSample(self) -> dict:
        import SampleData

        registerSampleData()
        nodes = SampleData.SampleDataLogic().downloadSamples(SAMPLE_NAME)
        self.assertEqual(len(nodes), 4)
        parameterNode = GliomaMTLLogic().getParameterNode()
        GliomaMTLLogic().assignInputsByName(parameterNode)
        inputs = {s: getattr(parameterNode, s) for s in SEQUENCES}
        self.assertEqual({s: n.GetName() for s, n in inputs.items()}, {s: f"{SAMPLE_NAME}-{s}" for s in SEQUENCES})
        return inputs

    def test_FullFlow(self):
        logic = GliomaMTLLogic()
        if not logic.dependenciesReady():
            self.delayDisplay("Engine dependencies are not installed: install them from the panel, then rerun")
            self.skipTest("engine dependencies missing")
        dataFolder = Path(slicer.util.tempDirectory("GliomaMTLTest"))
        logic.environment = {"GLIOMAMTL_DATA": str(dataFolder)}
        inputs = self.loadSample()
        modelId = next(c.id for c in logic.modelChoices() if c.shipped and c.name == "gliomamtl_adult")

        self.delayDisplay("Predict")
        job = logic.predict(inputs, modelId, "cpu", waitForCompletion=True)
        self.assertEqual(job.outcome(), "done", job.details())
        imported = logic.importPrediction(job.files, inputs)
        segmentation = imported.segmentationNode.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, ["necrotic core", "edema", "enhancing tumor"])
        rows = results.genotype_rows(imported.report)
        self.assertEqual({r.task for r in rows}, {"idh", "codel_1p19q"})
        self.assertGreater(dict(results.volume_rows(imported.report))["WT"], 0.0)
        reference = logic.referenceVolume(inputs, job.files)
        geometry = vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(geometry)
        segmentId = segmentation.GetSegmentIdBySegmentName("edema")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(imported.segmentationNode, segmentId, reference)
        self.assertEqual(mask.shape, slicer.util.arrayFromVolume(reference).shape)
        labelsFromFile = logic.readOnReference(imported.labelFile, reference, labelmap=True)
        self.assertEqual(int(((labelsFromFile == 2) != (mask > 0)).sum()), 0)

        self.delayDisplay("Explain")
        job = logic.explain(inputs, modelId, "WT", 4, "cpu", waitForCompletion=True)
        self.assertEqual(job.outcome(), "done", job.details())
        explanation = logic.readExplanation(job.files, "WT", inputs)
        heat = logic.showHeatmap(explanation, next(iter(explanation.heatmaps)), inputs, 0.5)
        self.assertEqual(slicer.util.arrayFromVolume(heat).shape, slicer.util.arrayFromVolume(reference).shape)
        heatGeometry = vtk.vtkMatrix4x4()
        heat.GetIJKToRASMatrix(heatGeometry)
        self.assertTrue(all(abs(heatGeometry.GetElement(i, j) - geometry.GetElement(i, j)) < 1e-9
                            for i in range(4) for j in range(4)))

        self.delayDisplay("Correct (two cases) and fine-tune")
        for caseId in ("GliomaMTLSample", "GliomaMTLSample-b"):
            job = logic.saveCorrection(inputs, imported.segmentationNode, caseId, modelId, {"idh": "wildtype"},
                                       predictionFile=str(imported.labelFile), waitForCompletion=True)
            self.assertEqual(job.outcome(), "done", job.details())
        job = logic.finetune(modelId, 2, waitForCompletion=True)
        self.assertEqual(job.outcome(), "done", job.details())
        newVersion = job.state.result["version"]

        self.delayDisplay("Switch version and roll back")
        registry = dataFolder / "models"
        byId = {c.id: c for c in models.list_choices(registry)}
        self.assertIn(newVersion, byId)
        job = logic.useVersion(newVersion, waitForCompletion=True)
        self.assertEqual(job.outcome(), "done", job.details())
        self.assertTrue({c.id: c for c in models.list_choices(registry)}[newVersion].active)
        job = logic.rollback("gliomamtl_adult", waitForCompletion=True)
        self.assertEqual(job.outcome(), "done", job.details())
        self.assertTrue({c.id: c for c in models.list_choices(registry)}[modelId].active)
        logic.cleanupWorkFolders()
        self.delayDisplay("GliomaMTL self-test passed")
