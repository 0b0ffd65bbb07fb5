// Calibrate_Model.ijm - fiji-consensus
// Runs `fiji-consensus calibrate --model <model> --lab <project> --out <project>/models/<name> --json`: the
// model's own thresholds for this project's microscope and experts, chosen on the images the experts have
// annotated (two are enough): the probability threshold (how far each object extends) and the object
// threshold (an object counts only where its peak probability passes it: which nuclei count). The weights
// are unchanged; it takes seconds to a minute. The new model is then the one Predict Ensemble offers first.
// The model is an ensemble folder in <project>/models/ or a bioimage.io package (.zip) made by fiji-consensus.
// Non-interactive: argument lines python=, project=, model= (a name in models/, or a path), name= (the new
// model's name), only_threshold=1 (choose the one threshold only).

fcInit();
py = fcPython();
project = fcProject(false);
names = fcModelNames(project);
model = fcArg("model", fcPref("predict_model", ""));
name = fcArg("name", "");
onlyThreshold = fcArg("only_threshold", "0");
if (!FC_BATCH) {
	if (names.length == 0)
		fcFail("the project has no model in " + project + "/models: train one first (Train Ensemble), or copy a bioimage.io model (.zip) made by fiji-consensus there");
	Dialog.create("Fiji consensus: Calibrate Model");
	Dialog.addMessage("Project: " + project + "\nThe thresholds are chosen on the images its experts annotated (two are enough).");
	Dialog.addChoice("Model (ensemble folder or .zip package)", names, model);
	Dialog.addString("Name of the calibrated model (empty: <model>-calibrated):", name, 24);
	Dialog.addCheckbox("Choose the one probability threshold only (no object threshold)", false);
	Dialog.show();
	model = Dialog.getChoice();
	name = Dialog.getString();
	onlyThreshold = "0";
	if (Dialog.getCheckbox())
		onlyThreshold = "1";
}
modelPath = fcModelPath(project, model);
if (name == "") {
	name = fcModelLabel(modelPath);  // a user function's result first in an expression hangs ImageJ 1.53t
	name = name + "-calibrated";
}
if (!fcValidName(name))
	fcFail("the model name '" + name + "' is not valid: use letters, digits, underscore, dot or minus");
out = project + "/models/" + name;
if (File.exists(out))
	fcFail("the model " + out + " exists; choose another name");
showStatus("fiji-consensus: calibrating " + File.getName(modelPath) + " on the annotated images; ImageJ waits until it is done...");
showProgress(0.05);
if (onlyThreshold == "1")
	res = exec(py, "-c", FC_CODE, "calibrate", "--model", modelPath, "--lab", project, "--out", out, "--threshold-only", "--json");
else
	res = exec(py, "-c", FC_CODE, "calibrate", "--model", modelPath, "--lab", project, "--out", out, "--json");
json = fcResult(res, "calibrate");
showProgress(1);
outDir = fcJsonGet(json, "out");
thr = fcJsonGet(json, "threshold");
obj = fcJsonGet(json, "object_threshold");
f1 = fcJsonGet(json, "roi_f1");
one = fcJsonGet(json, "roi_f1_one_threshold");
if (obj == "null")
	obj = "none";
print("Calibrated " + File.getName(modelPath) + " -> " + outDir);
print("  probability threshold " + fcJsonGet(json, "previous_threshold") + " -> " + thr + ", object threshold " + obj);
print("  mean ROI-F1 on the annotated images " + d2s(parseFloat(f1), 3) + " (the best single threshold: " + d2s(parseFloat(one), 3) + ")");
print("  Predict Ensemble with " + name + " applies both; check its result on images the experts did not annotate.");
if (!FC_BATCH)
	fcSetPref("predict_model", name);
showStatus("Calibrated " + name + ": threshold " + thr + ", object threshold " + obj);
print("FIJI_CONSENSUS_DONE calibrate " + outDir + " threshold=" + thr + " object_threshold=" + obj + " roi_f1=" + f1);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
