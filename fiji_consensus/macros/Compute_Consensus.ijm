// Compute_Consensus.ijm - fiji-consensus
// Runs `fiji-consensus consensus` on the project folder (images/, annotations/<expert>/) and opens the
// result: the image with the consensus (white) and each expert's outlines (one colour each) as overlay,
// and every expert's scores against the consensus in the Results table.
// A run that failed leaves nothing behind; an unfinished result (no summary.json) is replaced.
// Non-interactive: argument lines python=, project=, method=staple|majority|objects, min_size=, image=,
// overwrite=1.

fcInit();
py = fcPython();
project = fcProject(false);
if (!File.isDirectory(project + "/images") || !File.isDirectory(project + "/annotations"))
	fcFail("the project folder " + project + " needs images/ and annotations/<expert>/ (save annotations with Save Expert Annotations)");
method = fcArg("method", fcPref("method", "staple"));
minSize = fcArg("min_size", fcPref("min_size", "0"));
if (!FC_BATCH) {
	Dialog.create("Fiji consensus: Compute Consensus");
	Dialog.addMessage("Project: " + project);
	Dialog.addChoice("Method", newArray("staple", "majority", "objects"), method);
	Dialog.addNumber("Smallest object (pixels)", parseInt(minSize));
	Dialog.show();
	method = Dialog.getChoice();
	minSize = fcNum(Dialog.getNumber());
	fcSetPref("method", method);
	fcSetPref("min_size", minSize);
}
if (method != "staple" && method != "majority" && method != "objects")
	fcFail("method must be staple, majority or objects; got " + method);
if (isNaN(parseInt(minSize)) || parseInt(minSize) < 0 || parseInt(minSize) != parseFloat(minSize))
	fcFail("the smallest object size must be a whole number >= 0; got " + minSize);
minSize = "" + parseInt(minSize);

out = project + "/consensus/" + method;
overwrite = false;
existing = newArray(0);
if (File.isDirectory(out))
	existing = getFileList(out);
if (existing.length > 0) {
	if (!File.exists(out + "/summary.json")) {
		overwrite = true;  // an earlier run did not finish: its files are replaced
		print("Replacing the unfinished result in " + out);
	} else {
		flag = fcArg("overwrite", "0");
		if (FC_BATCH)
			overwrite = (flag == "1");
		else
			overwrite = getBoolean(out + " exists.\nReplace its files with a new consensus?");
		if (!overwrite)
			fcFail(out + " exists and is not empty; not replaced");
	}
}
showStatus("fiji-consensus: computing the " + method + " consensus of " + project + " ...");
showProgress(0.05);
if (overwrite)
	res = exec(py, "-c", FC_CODE, "consensus", "--project", project, "--method", method, "--min-size", minSize, "--out", out, "--overwrite", "--no-progress", "--json");
else
	res = exec(py, "-c", FC_CODE, "consensus", "--project", project, "--method", method, "--min-size", minSize, "--out", out, "--no-progress", "--json");
json = fcJsonLine(res, "ok");
ok = fcJsonGet(json, "ok");
if (ok != "true" && !File.exists(out + "/summary.json"))
	fcRemoveTree(out);  // nothing half-made is left to block the next run or to be shown as a result
json = fcResult(res, "consensus");
showProgress(1);
outDir = fcJsonGet(json, "out");
print("Consensus (" + method + ") of " + fcJsonGet(json, "n_images") + " images -> " + outDir);
print("Per-expert scores: " + outDir + "/experts_summary.csv (in the Results table), per image: experts.csv; agreement: " + outDir + "/agreement.csv");

// each expert's scores against the consensus (mean over images) in the Results table
rows = 0;
table = outDir + "/experts_summary.csv";
if (!File.exists(table))
	table = outDir + "/experts.csv";
if (File.exists(table)) {
	run("Clear Results");
	open(table);
	rows = Table.size;
	IJ.renameResults(File.getName(table), "Results");
}

id = fcArg("image", "");
asked = (id != "");
if (id == "" && nImages > 0)
	id = fcImageId();
if (id != "" && !File.exists(outDir + "/overlays/" + id + ".tif")) {
	if (asked)
		fcFail("the consensus has no image " + id + " (image=" + id + "): no " + outDir + "/overlays/" + id + ".tif");
	print("The open image " + id + " is not in the project; showing the first image instead");
	id = "";
}
if (id == "") {
	files = getFileList(outDir + "/overlays");
	if (files.length == 0)
		fcFail("no overlay images in " + outDir + "/overlays");
	id = fcStem(files[0]);
}
open(outDir + "/overlays/" + id + ".tif");
fcShowRange();
rename(id + " - consensus (" + method + ") and experts");
getMinAndMax(lo, hi);
showStatus("Consensus (" + method + ") done: " + fcJsonGet(json, "n_images") + " images; expert scores in the Results table");
print("FIJI_CONSENSUS_DONE consensus " + outDir + " image=" + id + " overlay=" + Overlay.size + " results=" + rows + " display=" + lo + "-" + hi);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
