// Next_Planned_Image.ijm - fiji-consensus
// Asks `fiji-consensus plan next --project <project> --expert <name> --json` for the next image the
// project's annotation plan gives this expert, opens it, and remembers the expert so that Save Expert
// Annotations offers that name.
// Non-interactive: argument lines python=, project=, expert=.

fcInit();
py = fcPython();
project = fcProject(false);
expert = fcArg("expert", fcPref("planned_expert", ""));
if (!FC_BATCH)
	expert = getString("Next planned image for the expert (letters, digits, underscore, dot, minus):", expert);
if (!fcValidName(expert))
	fcFail("the expert name '" + expert + "' is not valid: use letters, digits, underscore, dot or minus");
showStatus("fiji-consensus: asking the annotation plan for " + expert + "'s next image...");
res = exec(py, "-c", FC_CODE, "plan", "next", "--project", project, "--expert", expert, "--json");
json = fcJsonLine(res, "image");
if (json == "") {
	if (indexOf(res, "invalid choice: 'plan'") >= 0)
		fcFail("this fiji-consensus has no annotation plans ('plan' command) yet: update it\n(pip install -U fiji-consensus)");
	json = fcJsonLine(res, "ok");
	if (json != "")
		fcFail("fiji-consensus plan next failed:\n" + fcJsonGet(json, "error"));
	fcFail("fiji-consensus plan next gave no result. Its output:\n" + fcTail(res, 15));
}
ok = fcJsonGet(json, "ok");
if (ok == "false")
	fcFail("fiji-consensus plan next failed:\n" + fcJsonGet(json, "error"));
id = fcJsonGet(json, "image");
remaining = fcJsonGet(json, "remaining");
fcSetPref("planned_expert", expert);
if (id == "null" || id == "") {
	showStatus("Nothing left to annotate for " + expert);
	print("The annotation plan of " + project + " has no image left for " + expert);
	if (!FC_BATCH)
		showMessage("Fiji consensus", "The annotation plan has no image left for " + expert + ".");
	print("FIJI_CONSENSUS_DONE plan none expert=" + expert + " remaining=" + remaining);
	exit();
}
path = fcJsonGet(json, "path");
if (!File.exists(path))
	fcFail("the planned image " + id + " is not at " + path);
if (!FC_BATCH && roiManager("count") > 0) {
	if (getBoolean("The ROI Manager holds " + roiManager("count") + " ROIs (not of this image).\nClear it before you annotate " + id + "?"))
		roiManager("reset");
}
open(path);
fcShowRange();
showStatus(expert + ": annotate " + id + " (planned images remaining: " + remaining + "), then Save Expert Annotations");
print("Next planned image for " + expert + ": " + id + " (" + path + "); remaining: " + remaining);
print("FIJI_CONSENSUS_DONE plan image=" + id + " expert=" + expert + " remaining=" + remaining + " title=" + getTitle());

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
