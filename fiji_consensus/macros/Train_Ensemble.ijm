// Train_Ensemble.ijm - fiji-consensus
// Runs `fiji-consensus train --project <project> --out <project>/models/<name> --json` (needs the train
// extra: pip install 'fiji-consensus[train]'); training can take long: ImageJ waits for it. At the end it
// shows the model's validation score next to the experts' and warns when the model is not useful.
// Asks for the model name, the number of members, the time budget (minutes for the whole ensemble),
// optionally a fixed number of iterations per member, and optionally a model to start from: fine-tuning a
// model (an ensemble folder in models/ or a fiji-consensus bioimage.io package there, such as a zoo model) on
// this project's annotated images (train --init MODEL --split all --targets fraction, at its rate 5e-4;
// two annotated images and 300 iterations per member are a start; then Calibrate Model on the result),
// optionally rehearsing the labs that model was trained on (a folder of lab folders, e.g. the repository's
// data/segebarth2020 for the zoo models: train --rehearse DIR; half the patches come from them, so two
// images cannot pull the model away from what it knew; the best adaptation measured, with Calibrate Model).
// Non-interactive: argument lines python=, project=, name=, members=, minutes=; for quick runs also
// iterations= (per member, replaces minutes) and patch= (training patch size, a multiple of 8); init= (a
// model in models/ or a path to fine-tune from; empty: train from scratch), rehearse= (with init=: the
// folder of the model's training labs; empty: none).

fcInit();
py = fcPython();
project = fcProject(false);
name = fcArg("name", fcPref("model_name", "ensemble"));
members = fcArg("members", fcPref("train_members", "5"));
minutes = fcArg("minutes", fcPref("train_minutes", "60"));
iterations = fcArg("iterations", fcPref("train_iterations", ""));
patch = fcArg("patch", fcPref("train_patch", "256"));
init = fcArg("init", "");
rehearse = fcArg("rehearse", "");
SCRATCH = "(none: train from scratch)";
if (!FC_BATCH) {
	names = fcModelNames(project);
	starts = Array.concat(newArray(SCRATCH), names);
	init = fcPref("train_init", SCRATCH);
	its = parseInt(iterations);
	if (isNaN(its))
		its = 0;
	Dialog.create("Fiji consensus: Train Ensemble");
	Dialog.addMessage("Project: " + project);
	Dialog.addString("Model name (letters, digits, underscore, dot, minus):", name, 20);
	Dialog.addNumber("Ensemble members:", parseInt(members));
	Dialog.addNumber("Time budget for the whole ensemble (minutes):", parseFloat(minutes));
	Dialog.addNumber("Iterations per member (0: use the time budget):", its);
	Dialog.addNumber("Training patch size (pixels, a multiple of 8):", parseInt(patch));
	Dialog.addChoice("Start from (fine-tune this model on the project's images):", starts, init);
	Dialog.addDirectory("Rehearse its training labs (a folder of labs; empty: none):", fcPref("train_rehearse", ""));
	Dialog.show();
	name = Dialog.getString();
	members = fcNum(Dialog.getNumber());
	minutes = fcNum(Dialog.getNumber());
	iterations = fcNum(Dialog.getNumber());
	patch = fcNum(Dialog.getNumber());
	init = Dialog.getChoice();
	rehearse = Dialog.getString();
	fcSetPref("train_init", init);
	fcSetPref("train_rehearse", rehearse);
	if (init == SCRATCH)
		init = "";
	if (iterations == "0")
		iterations = "";
	fcSetPref("model_name", name);
	fcSetPref("train_members", members);
	fcSetPref("train_minutes", minutes);
	fcSetPref("train_iterations", iterations);
	fcSetPref("train_patch", patch);
}
if (!fcValidName(name))
	fcFail("the model name '" + name + "' is not valid: use letters, digits, underscore, dot or minus");
nMembers = parseInt(members);
if (isNaN(nMembers) || nMembers < 1 || nMembers != parseFloat(members))
	fcFail("the number of members must be a whole number >= 1; got '" + members + "'");
budget = parseFloat(minutes);
if (isNaN(budget) || budget <= 0)
	fcFail("the time budget must be a number of minutes > 0; got '" + minutes + "'");
if (iterations != "" && (isNaN(parseInt(iterations)) || parseInt(iterations) < 1 || parseInt(iterations) != parseFloat(iterations)))
	fcFail("the iterations per member must be a whole number >= 1 (or 0 in the dialog: use the time budget); got '" + iterations + "'");
if (isNaN(parseInt(patch)) || parseInt(patch) < 16 || parseInt(patch) % 8 != 0)
	fcFail("the patch size must be a multiple of 8, at least 16; got '" + patch + "'");
out = project + "/models/" + name;
existing = newArray(0);
if (File.isDirectory(out))
	existing = getFileList(out);
if (existing.length > 0)
	fcFail("the model " + out + " exists; choose another name");
initPath = "";
if (init != "")
	initPath = fcModelPath(project, init);
if (iterations != "")
	what = "" + nMembers + " member(s) x " + iterations + " iterations";
else
	what = "" + nMembers + " member(s), " + minutes + " minutes in all";
if (rehearse != "" && initPath == "") {
	print("(the rehearsal folder " + rehearse + " is for fine-tuning a model: not used when training from scratch)");
	rehearse = "";
}
if (rehearse != "" && !File.isDirectory(rehearse))
	fcFail("the rehearsal folder " + rehearse + " does not exist; choose the folder of the model's training labs or leave it empty");
if (initPath != "")
	what = what + ", fine-tuning " + File.getName(initPath);
if (rehearse != "")
	what = what + ", rehearsing " + rehearse;
showStatus("fiji-consensus: training " + name + " (" + what + "); ImageJ waits until it is done...");
showProgress(0.02);
print("Training " + out + " (" + what + ") ...");
splitKind = "auto";
if (nMembers == 1)
	splitKind = "bootstrap";  // k-fold splits need 2 members or more
budgetFlag = "--max-minutes";
budgetValue = minutes;
if (iterations != "") {
	budgetFlag = "--iterations";
	budgetValue = iterations;
}
validateEvery = "200";  // rehearsal validates on every rehearsed image too: once, at the end, as measured
if (iterations != "")
	validateEvery = iterations;
if (initPath != "" && rehearse != "")  // the same, next to the model's own training labs
	res = exec(py, "-c", FC_CODE, "train", "--project", project, "--out", out, "--members", members, "--split", "all", budgetFlag, budgetValue, "--patch-size", patch, "--init", initPath, "--rehearse", rehearse, "--validate-every", validateEvery, "--targets", "fraction", "--no-progress", "--json");
else if (initPath != "")  // fine-tuning: every member on all annotated images, the zoo models' targets (init: a gentle rate)
	res = exec(py, "-c", FC_CODE, "train", "--project", project, "--out", out, "--members", members, "--split", "all", budgetFlag, budgetValue, "--patch-size", patch, "--init", initPath, "--targets", "fraction", "--no-progress", "--json");
else
	res = exec(py, "-c", FC_CODE, "train", "--project", project, "--out", out, "--members", members, "--split", splitKind, budgetFlag, budgetValue, "--patch-size", patch, "--no-progress", "--json");
json = fcResult(res, "train");
showProgress(1);
outDir = fcJsonGet(json, "out");
fcSetPref("model_name", name);
print("Trained ensemble: " + outDir);
if (initPath != "")
	print("  fine-tuned from " + initPath + "; next: Calibrate Model on it (its own thresholds for this lab)");
if (rehearse != "")
	print("  rehearsed the labs of " + rehearse + " (those the model was trained on, where it names them)");

// its validation score next to the experts'
res = exec(py, "-c", FC_CODE, "fiji", "model-summary", outDir, "--json");
sjson = fcResult(res, "fiji model-summary");
text = fcJsonGet(sjson, "text");
useless = fcJsonGet(sjson, "useless");
print(text);
if (useless == "true" && !FC_BATCH)
	showMessage("Fiji consensus: the model is not useful yet", text);
showStatus("Trained " + name + ": validation ROI-F1 " + fcJsonGet(sjson, "val_roi_f1") + " (experts " + fcJsonGet(sjson, "expert_roi_f1") + ")");
print("FIJI_CONSENSUS_DONE train " + outDir + " val_roi_f1=" + fcJsonGet(sjson, "val_roi_f1") + " val_dice=" + fcJsonGet(sjson, "val_dice") + " expert_roi_f1=" + fcJsonGet(sjson, "expert_roi_f1") + " useless=" + useless);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
