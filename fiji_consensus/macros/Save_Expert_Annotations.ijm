// Save_Expert_Annotations.ijm - fiji-consensus
// Saves the ROI Manager (or, if it is empty, the image's overlay) as
// <project>/annotations/<expert>/<image id>.zip, and a copy of the image as <project>/images/<id>.tif when
// the project has no image with that id yet. The image id is the name of the image's file (not the window
// title). An expert who found no objects saves an empty annotation (after a confirmation). Never replaces a
// file without asking. After saving, the ROI Manager is cleared for the next image or expert.
// Non-interactive: argument lines image=, rois= (a RoiSet to load), project=, expert=, overwrite=1,
// empty=1 (save an empty annotation when there are no ROIs).

fcInit();
project = fcProject(true);
if (FC_BATCH) {
	img = fcArg("image", "");
	if (img != "")
		open(img);
	rs = fcArg("rois", "");
	if (rs != "") {
		roiManager("reset");
		roiManager("Open", rs);
	}
}
if (nImages == 0)
	fcFail("open the image you annotated first");
imageId = getImageID();
id = fcImageId();
// the expert of Next Planned Image, else asked every time (a shared workstation: never the last expert's name)
expert = fcArg("expert", fcPref("planned_expert", ""));
if (!FC_BATCH)
	expert = getString("Your name as expert (letters, digits, underscore, dot, minus):", expert);
if (!fcValidName(expert))
	fcFail("the expert name '" + expert + "' is not valid: use letters, digits, underscore, dot or minus (it becomes a folder name)");

n = roiManager("count");
fromOverlay = false;
if (n == 0 && Overlay.size > 0) {
	fromOverlay = true;
	if (!FC_BATCH)
		fromOverlay = getBoolean("The ROI Manager is empty. Save the " + Overlay.size + " ROIs of the overlay?");
	if (fromOverlay) {
		run("To ROI Manager");
		n = roiManager("count");
	}
}
empty = false;
if (n == 0) {
	emptyArg = fcArg("empty", "0");
	if (FC_BATCH) {
		if (emptyArg != "1")
			fcFail("the ROI Manager is empty: outline the objects and add each one (press t) first\n(argument empty=1 saves an empty annotation: the expert found no objects)");
	} else if (!getBoolean("The ROI Manager is empty.\n \nSave an EMPTY annotation of image " + id + " by " + expert + "?\n(Yes: you found no objects in this image.  No: add your outlines first, press t for each.)")) {
		exit();
	}
	empty = true;
}

dir = project + "/annotations/" + expert;
fcMakeDirs(dir);
path = dir + "/" + id + ".zip";
others = getFileList(dir);
for (i = 0; i < others.length; i++) {
	o = others[i];
	stem = fcStem(o);
	if (o != id + ".zip" && (stem == id || startsWith(o, id + "_") || startsWith(o, id + "-") || startsWith(o, id + ".")))
		fcFail("expert " + expert + " already has another annotation of image " + id + ": " + dir + "/" + o + "\nremove it first (one annotation per image and expert)");
}
if (File.exists(path)) {
	flag = fcArg("overwrite", "0");
	if (FC_BATCH) {
		if (flag != "1")
			fcFail(path + " exists; not replaced (argument overwrite=1 replaces it)");
	} else if (!getBoolean(path + " exists.\nReplace it with the " + n + " ROIs of " + expert + "?")) {
		exit();
	}
}
// written beside the target under a hidden name, then renamed: a crash leaves no half-written annotation
tmp = dir + "/." + id + ".saving.zip";
if (File.exists(tmp))
	ok = File.delete(tmp);
if (empty) {
	// an empty zip archive (its end-of-central-directory record): the expert's answer "no objects"
	eocd = "PK" + fromCharCode(5, 6);
	for (i = 0; i < 18; i++)
		eocd = eocd + fromCharCode(0);
	File.saveString(eocd, tmp);
} else {
	roiManager("Deselect");
	roiManager("Save", tmp);
}
if (!File.exists(tmp))
	fcFail("could not save " + path);
if (File.exists(path))
	ok = File.delete(path);
ok = File.rename(tmp, path);
if (!File.exists(path))
	fcFail("could not save " + path);

imagesDir = project + "/images";
fcMakeDirs(imagesDir);
have = false;
files = getFileList(imagesDir);
for (i = 0; i < files.length; i++) {
	stem = fcStem(files[i]);
	if (stem == id)
		have = true;
}
if (!have) {
	selectImage(imageId);
	run("Duplicate...", "title=fc_copy duplicate");
	Overlay.remove;
	saveAs("Tiff", imagesDir + "/" + id + ".tif");
	close();
}
selectImage(imageId);
if (fromOverlay)
	run("From ROI Manager");  // the image keeps the overlay it came with
roiManager("reset");  // the next expert starts with an empty ROI Manager
what = "" + n + " ROIs";
if (empty)
	what = "an empty annotation (no objects)";
print("Saved " + what + " of " + expert + " for image " + id + " to " + path);
showStatus("Saved " + what + " of " + expert + " for image " + id);
print("FIJI_CONSENSUS_DONE saved " + n + " " + path + " image=" + id + " expert=" + expert);

// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----
