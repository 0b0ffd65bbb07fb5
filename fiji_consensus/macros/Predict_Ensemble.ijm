// Predict_Ensemble.ijm - fiji-consensus
// Runs `fiji-consensus predict --model <model> <image> --out <project>/predictions/<model> --json` on the
// current image (saved on disk) and opens its result with the objects as overlay. The model is an ensemble
// folder in <project>/models/ or a bioimage.io package (.zip) there, e.g. one of the zoo.
// Optionally subtracts a bright, uneven background first (Process > Subtract Background's rolling ball, the same
// computation: `--subtract-background R`), always or only where the model's out-of-domain check finds the
// background brighter or more uneven than in training (`--subtract-background-if-flagged`, radius 0: the
// model's suggestion); the result then goes to predictions/<model>-bg<R> or -bgflagged<R>. When the image looks
// unlike the model's training images (out of domain), the Log says why.
// Non-interactive: argument lines python=, project=, model= (a name in models/, or a path), image= (a file),
// subtract= (rolling ball radius in pixels; 0 or none: no subtraction), ifflagged=1 (only where flagged).

fcInit();
py = fcPython();
project = fcProject(false);
names = fcModelNames(project);
model = fcArg("model", fcPref("predict_model", ""));
subtract = fcArg("subtract", "0");
ifflagged = fcArg("ifflagged", "0");
if (FC_BATCH) {
	image = fcArg("image", "");
} else {
	if (names.length == 0)
		fcFail("the project has no model in " + project + "/models: train one first (Train Ensemble), or copy a bioimage.io model (.zip) there");
	if (nImages == 0)
		fcFail("open the image to segment first");
	if (getInfo("image.filename") == "")
		fcFail("save the image first: the model reads it from disk");
	image = getDirectory("image") + getInfo("image.filename");
	Dialog.create("Fiji consensus: Predict");
	Dialog.addMessage("Image: " + image);
	Dialog.addChoice("Model (ensemble folder or .zip package)", names, model);
	Dialog.addNumber("Subtract background: rolling ball radius (0 = none)", parseFloat(fcPref("predict_subtract", "0")), 0, 6, "pixels");
	Dialog.addMessage("(for a background brighter or more uneven than the model's training images;\n at least the diameter of the largest objects)");
	wasFlagged = fcPref("predict_ifflagged", "0");
	checked = (wasFlagged == "1");  // ImageJ 1.53t: a comparison cannot be a Dialog argument itself
	Dialog.addCheckbox("Only where the background looks unlike the training images (radius 0: suggested)", checked);
	Dialog.show();
	model = Dialog.getChoice();
	subtract = fcNum(Dialog.getNumber());
	ifflagged = "0";
	if (Dialog.getCheckbox())
		ifflagged = "1";
	fcSetPref("predict_model", model);
	fcSetPref("predict_subtract", subtract);
	fcSetPref("predict_ifflagged", ifflagged);
}
if (subtract == "none" || subtract == "")
	subtract = "0";
modelPath = fcModelPath(project, model);
label = fcModelLabel(modelPath);
if (!File.exists(image))
	fcFail("the image file " + image + " does not exist");
out = project + "/predictions/" + label;
showStatus("fiji-consensus: predicting " + File.getName(image) + " with " + label + "; ImageJ waits until it is done...");
showProgress(0.05);
// other settings: a folder of their own
if (ifflagged == "1" && subtract == "0") {
	out = out + "-bgflagged";
	res = exec(py, "-c", FC_CODE, "predict", "--model", modelPath, image, "--out", out, "--subtract-background-if-flagged", "--no-progress", "--json");
} else if (ifflagged == "1") {
	out = out + "-bgflagged" + subtract;
	res = exec(py, "-c", FC_CODE, "predict", "--model", modelPath, image, "--out", out, "--subtract-background", subtract, "--subtract-background-if-flagged", "--no-progress", "--json");
} else if (subtract == "0") {
	res = exec(py, "-c", FC_CODE, "predict", "--model", modelPath, image, "--out", out, "--no-progress", "--json");
} else {
	out = out + "-bg" + subtract;
	res = exec(py, "-c", FC_CODE, "predict", "--model", modelPath, image, "--out", out, "--subtract-background", subtract, "--no-progress", "--json");
}
json = fcResult(res, "predict");
showProgress(1);
outDir = fcJsonGet(json, "out");
id = fcStem(File.getName(image));
result = outDir + "/overlays/" + id + ".tif";
if (!File.exists(result))
	fcFail("the prediction has no overlay image " + result);
open(result);
fcShowRange();
rename(id + " - prediction (" + label + ")");
showStatus("Prediction with " + label + ": " + Overlay.size + " objects (outlines coloured by uncertainty)");
print("Prediction of " + id + " with " + label + ": " + Overlay.size + " objects -> " + outDir);
// out of domain: the image's statistics beyond the model's training range (images.csv, column out_of_domain)
ood = "";
subtracted = "";
table = split(File.openAsString(outDir + "/images.csv"), "\n");
for (i = 1; i < table.length; i++) {
	cells = split(table[i], ",");
	if (cells.length > 4 && cells[1] == id) {
		ood = cells[3];
		subtracted = cells[4];
	}
}
if (subtracted != "")
	print("The model saw " + id + " with its background subtracted (rolling ball radius " + subtracted + ")");
if (ood == "unchecked") {
	print("WARNING: " + label + " stores no training range, so " + id + " was not checked for being unlike its training images");
} else if (ood != "") {
	msg = id + " looks unlike " + label + "'s training images (" + ood + "): check its result.";
	if ((indexOf(ood, "background_level") >= 0 || indexOf(ood, "background_unevenness") >= 0) && subtract == "0" && ifflagged != "1")
		msg = msg + " For a bright or uneven background, predict again with 'Subtract background' (rolling ball radius at least the diameter of the largest objects).";
	if (indexOf(ood, "background_texture") >= 0)
		msg = msg + " Its background is textured at the objects' scale (tissue, vessels, folds), which subtracting the background does not remove; the model may miss objects there or take the texture for them: choose the threshold on two annotated images (calibrate) or fine-tune.";
	print("WARNING: " + msg);
	showStatus("Check this result: the image looks unlike the model's training images (see the Log)");
}
print("FIJI_CONSENSUS_DONE predict " + outDir + " image=" + id + " overlay=" + Overlay.size + " out_of_domain=" + replace(ood, " ", "+") + " subtracted=" + subtracted);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
