// Save_Expert_Annotations.ijm - fiji-consensus
// Saves the ROI Manager (or, if it is empty, the image's overlay) as
// <project>/annotations/<expert>/<image id>.zip, and a copy of the image as <project>/images/<id>.tif when
// the project has no image with that id yet. Never replaces a file without asking.
// Non-interactive: argument lines image=, rois= (a RoiSet to load), project=, expert=, overwrite=1.

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
id = fcStem(getTitle());
expert = fcArg("expert", fcPref("expert", ""));
if (!FC_BATCH)
	expert = getString("Your name as expert (letters, digits, _ . -):", expert);
if (!fcValidName(expert))
	fcFail("the expert name '" + expert + "' is not valid: use letters, digits, _ . - (it becomes a folder name)");
if (!FC_BATCH)
	fcSetPref("expert", expert);

n = roiManager("count");
if (n == 0 && Overlay.size > 0) {
	useOverlay = true;
	if (!FC_BATCH)
		useOverlay = getBoolean("The ROI Manager is empty. Save the " + Overlay.size + " ROIs of the overlay?");
	if (useOverlay) {
		run("To ROI Manager");
		n = roiManager("count");
	}
}
if (n == 0)
	fcFail("the ROI Manager is empty: outline the objects and add each one (press t) first");

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
	} else if (!getBoolean(path + " exists.\nReplace it with the " + n + " ROIs of the ROI Manager?")) {
		exit();
	}
}
roiManager("Deselect");
roiManager("Save", path);
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
	orig = getTitle();
	run("Duplicate...", "title=fc_copy duplicate");
	Overlay.remove;
	saveAs("Tiff", imagesDir + "/" + id + ".tif");
	close();
	selectImage(orig);
}
print("Saved " + n + " ROIs of " + expert + " for image " + id + " to " + path);
print("FIJI_CONSENSUS_DONE saved " + n + " " + path);

// ---- fiji-consensus helpers: the same block in every macro of this folder (tests check it) ----
// Settings are ImageJ preferences "fiji_consensus.*" (asked once; hold Shift when starting a macro to
// change them). Without a display of its own, a macro can be driven by its argument: lines "key=value"
// (python=, project=, ...); it then never asks, prints FIJI_CONSENSUS_ERROR: <message> on failure and
// FIJI_CONSENSUS_DONE ... on success. The CLI runs through exec() with one argument per word, never a shell.
// (ImageJ 1.53t cannot compare a user function's result in an expression: assign it to a variable first.)
var FC_ARGS = "";
var FC_BATCH = false;
var FC_CODE = "import runpy, sys; sys.stderr = sys.stdout; sys.argv[0] = 'fiji-consensus'; runpy.run_module('fiji_consensus', run_name='__main__', alter_sys=True)";

function fcInit() {
	FC_ARGS = getArgument();
	FC_BATCH = (FC_ARGS != "");
}

function fcArg(key, dflt) {
	lines = split(FC_ARGS, "\n");
	for (i = 0; i < lines.length; i++) {
		k = indexOf(lines[i], "=");
		if (k > 0 && substring(lines[i], 0, k) == key)
			return replace(substring(lines[i], k + 1), "\r", "");
	}
	return dflt;
}

function fcPref(key, dflt) {
	return call("ij.Prefs.get", "fiji_consensus." + key, dflt);
}

function fcSetPref(key, value) {
	call("ij.Prefs.set", "fiji_consensus." + key, value);
}

function fcFail(msg) {
	if (FC_BATCH) {
		print("FIJI_CONSENSUS_ERROR: " + msg);
		exit();
	}
	exit("Fiji consensus:\n \n" + msg);
}

function fcTail(text, n) {
	lines = split(text, "\n");
	s = "";
	for (i = maxOf(0, lines.length - n); i < lines.length; i++)
		s = s + lines[i] + "\n";
	return s;
}

function fcPython() {
	py = fcArg("python", "");
	if (py == "")
		py = fcPref("python", "");
	if (FC_BATCH && py == "")
		fcFail("no Python executable given (argument python=...)");
	if (!FC_BATCH && (py == "" || !File.exists(py) || isKeyDown("shift"))) {
		showMessage("Fiji consensus", "Choose the Python executable in which fiji-consensus is installed,\ne.g. .../venv/bin/python or ...\\Scripts\\python.exe\n(it prints itself with:  python -c \"import sys; print(sys.executable)\")");
		py = File.openDialog("Python executable with fiji-consensus");
	}
	if (!File.exists(py))
		fcFail("the Python executable " + py + " does not exist");
	v = exec(py, "-c", FC_CODE, "--version");
	if (!startsWith(v, "fiji-consensus"))
		fcFail("fiji-consensus does not run with " + py + "\n(install it there: " + py + " -m pip install fiji-consensus)\nIts output:\n" + fcTail(v, 12));
	if (!FC_BATCH)
		fcSetPref("python", py);
	return py;
}

function fcProject(create) {
	p = fcArg("project", "");
	if (p == "")
		p = fcPref("project", "");
	if (FC_BATCH && p == "")
		fcFail("no project folder given (argument project=...)");
	if (!FC_BATCH && (p == "" || !File.isDirectory(p) || isKeyDown("shift")))
		p = getDirectory("Choose the fiji-consensus project folder (images/, annotations/<expert>/)");
	if (endsWith(p, "/") || endsWith(p, "\\"))
		p = substring(p, 0, lengthOf(p) - 1);
	if (create && !File.isDirectory(p))
		File.makeDirectory(p);
	if (!File.isDirectory(p))
		fcFail("the project folder " + p + " does not exist");
	if (!FC_BATCH)
		fcSetPref("project", p);
	return p;
}

function fcMakeDirs(path) {
	if (File.isDirectory(path))
		return;
	parent = File.getParent(path);
	if (parent != "" && !File.isDirectory(parent))
		fcMakeDirs(parent);
	File.makeDirectory(path);
	if (!File.isDirectory(path))
		fcFail("cannot create the folder " + path);
}

function fcStem(name) {
	k = lastIndexOf(name, ".");
	if (k > 0)
		return substring(name, 0, k);
	return name;
}

function fcValidName(s) {
	return matches(s, "[A-Za-z0-9][A-Za-z0-9_.-]*");
}

function fcJsonLine(text) {
	lines = split(text, "\n");
	for (i = lines.length - 1; i >= 0; i--) {
		l = replace(lines[i], "\r", "");
		if (startsWith(l, "{") && indexOf(l, "\"ok\"") >= 0)
			return l;
	}
	return "";
}

function fcJsonGet(json, key) {
	k = indexOf(json, "\"" + key + "\":");
	if (k < 0)
		return "";
	i = k + lengthOf(key) + 3;
	while (substring(json, i, i + 1) == " ")
		i++;
	if (substring(json, i, i + 1) != "\"") {
		j = i;
		while (j < lengthOf(json) && indexOf(",}]", substring(json, j, j + 1)) < 0)
			j++;
		return substring(json, i, j);
	}
	r = "";
	i++;
	while (i < lengthOf(json)) {
		c = substring(json, i, i + 1);
		if (c == "\"")
			return r;
		if (c == "\\") {
			n = substring(json, i + 1, i + 2);
			if (n == "u") {
				r = r + fromCharCode(parseInt(substring(json, i + 2, i + 6), 16));
				i = i + 6;
			} else {
				if (n == "n")
					r = r + "\n";
				else if (n == "t")
					r = r + "\t";
				else if (n != "r" && n != "b" && n != "f")
					r = r + n;
				i = i + 2;
			}
		} else {
			r = r + c;
			i++;
		}
	}
	return r;
}

function fcResult(output, command) {
	json = fcJsonLine(output);
	if (json == "") {
		if (indexOf(output, "invalid choice: '" + command + "'") >= 0)
			fcFail("this fiji-consensus has no '" + command + "' command yet: update it\n(pip install -U 'fiji-consensus[train]')");
		fcFail("fiji-consensus " + command + " gave no result. Its output:\n" + fcTail(output, 15));
	}
	ok = fcJsonGet(json, "ok");
	if (ok != "true")
		fcFail("fiji-consensus " + command + " failed:\n" + fcJsonGet(json, "error"));
	return json;
}
// ---- end of fiji-consensus helpers ----
