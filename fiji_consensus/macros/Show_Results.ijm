// Show_Results.ijm - fiji-consensus
// Opens a finished result of the project (a consensus or a prediction) for one image: the image with its
// outlines as overlay, plus the consensus or prediction probability (Fire LUT, 0..1) when there is one, and
// lists the outlines per source in the Log. The result offered first is the one finished last.
// Non-interactive: argument lines project=, result=consensus/<method> or predictions/<model>, image=<id>.

fcInit();
project = fcProject(false);
results = newArray(0);
dflt = "";
newest = -1;
kinds = newArray("consensus", "predictions");
for (k = 0; k < kinds.length; k++) {
	subs = getFileList(project + "/" + kinds[k]);
	for (i = 0; i < subs.length; i++) {
		d = project + "/" + kinds[k] + "/" + subs[i];
		// only finished results: a run that failed or is still running has no summary.json
		if (endsWith(subs[i], "/") && File.isDirectory(d + "overlays") && File.exists(d + "summary.json")) {
			r = kinds[k] + "/" + substring(subs[i], 0, lengthOf(subs[i]) - 1);
			results = Array.concat(results, r);
			t = parseFloat(File.lastModified(d + "summary.json"));
			if (t > newest) {
				newest = t;
				dflt = r;  // the result computed last is offered first
			}
		}
	}
}
if (results.length == 0)
	fcFail("the project " + project + " has no finished results yet (run Compute Consensus or Predict Ensemble first)");
result = fcArg("result", dflt);
id = fcArg("image", "");
if (!FC_BATCH) {
	if (nImages > 0)
		id = fcImageId();
	Dialog.create("Fiji consensus: Show Results");
	Dialog.addChoice("Result", results, result);
	Dialog.addString("Image id (empty: the first)", id, 20);
	Dialog.show();
	result = Dialog.getChoice();
	id = Dialog.getString();
}
dir = project + "/" + result;
if (!File.isDirectory(dir + "/overlays"))
	fcFail("no result " + dir);
if (id == "") {
	files = getFileList(dir + "/overlays");
	id = fcStem(files[0]);
}
path = dir + "/overlays/" + id + ".tif";
if (!File.exists(path))
	fcFail("no result for image " + id + ": " + path + " does not exist");
// ROIs named "<source>:<name>" (consensus, experts); a prediction's objects carry no prefix
plain = "unnamed";
if (startsWith(result, "predictions/"))
	plain = "prediction";
open(path);
fcShowRange();
what = replace(result, "/", " ");
rename(id + " - " + what + " (overlay)");
overlayId = getImageID();
counts = "";
sources = newArray(0);
tally = newArray(0);
for (i = 0; i < Overlay.size; i++) {
	Overlay.activateSelection(i);
	nm = getInfo("selection.name");
	k = indexOf(nm, ":");
	src = plain;
	if (k > 0)
		src = substring(nm, 0, k);
	found = -1;
	for (j = 0; j < sources.length; j++)
		if (sources[j] == src)
			found = j;
	if (found < 0) {
		sources = Array.concat(sources, src);
		tally = Array.concat(tally, 1);
	} else {
		tally[found] = tally[found] + 1;
	}
}
run("Select None");
for (j = 0; j < sources.length; j++)
	counts = counts + " " + sources[j] + "=" + tally[j];
print(result + ", image " + id + ": outlines" + counts);
prob = dir + "/probability/" + id + ".tif";
if (File.exists(prob)) {
	open(prob);
	run("Fire");
	setMinAndMax(0, 1);
	rename(id + " - " + what + " (probability)");
	selectImage(overlayId);
}
print("FIJI_CONSENSUS_DONE show " + path + counts);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
