// ---- fiji-consensus helpers ----
// The one source of the helper functions of every fiji-consensus macro (fiji_consensus/macros/helpers.ijm):
// `fiji-consensus fiji install-macros` (and `write-macros`) append this block to each macro, so every
// installed .ijm file runs on its own in plain ImageJ and in Fiji.
// Settings are ImageJ preferences "fiji_consensus.*" (asked once; hold Shift when starting a macro to
// change them). Without a display of its own, a macro can be driven by its argument: lines "key=value"
// (python=, project=, ...); it then never asks, prints FIJI_CONSENSUS_ERROR: <message> on failure and
// FIJI_CONSENSUS_DONE ... on success (ImageJ -batch always exits 0: look for these lines). The CLI runs
// through exec() with one argument per word, never a shell.
// ImageJ 1.53t traps: a user function's result cannot be compared in an expression, nor returned directly
// from an if-branch (assign it to a variable first), and a comparison cannot be a Dialog.add* argument; dialog
// labels show "_" as a space (write "underscore"); a number from Dialog.getNumber() joined to a string reads
// "5.0" (use fcNum).
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
	print("FIJI_CONSENSUS_ERROR: " + msg);
	showStatus("");
	showProgress(1);
	if (FC_BATCH)
		exit();
	exit("Fiji consensus:\n \n" + msg);
}

function fcTail(text, n) {
	lines = split(text, "\n");
	s = "";
	for (i = maxOf(0, lines.length - n); i < lines.length; i++)
		s = s + lines[i] + "\n";
	return s;
}

// A number from a dialog as the text the user typed: 5 -> "5" (not "5.0"), 0.25 -> "0.25".
function fcNum(x) {
	if (isNaN(x))
		return "NaN";
	s = d2s(x, 6);
	if (indexOf(s, ".") >= 0) {
		while (endsWith(s, "0"))
			s = substring(s, 0, lengthOf(s) - 1);
		if (endsWith(s, "."))
			s = substring(s, 0, lengthOf(s) - 1);
	}
	return s;
}

function fcFirstFile(candidates) {
	for (i = 0; i < candidates.length; i++)
		if (File.exists(candidates[i]) && !File.isDirectory(candidates[i]))
			return candidates[i];
	return "";
}

// The Python interpreter for what the user chose: the interpreter itself, a virtual environment (or conda)
// folder, its bin/ or Scripts/ folder, or the fiji-consensus command (its interpreter is used).
function fcInterpreter(p) {
	if (endsWith(p, "/") || endsWith(p, "\\"))
		p = substring(p, 0, lengthOf(p) - 1);
	if (File.isDirectory(p)) {
		d = p + File.separator;
		py = fcFirstFile(newArray(d + "bin" + File.separator + "python", d + "bin" + File.separator + "python3", d + "Scripts" + File.separator + "python.exe", d + "python.exe", d + "python", d + "python3"));
		if (py == "")
			fcFail("the folder " + p + " holds no Python interpreter (looked for bin/python, Scripts\\python.exe, python.exe)\nchoose the Python executable, or the folder, of the environment where fiji-consensus is installed");
		return py;
	}
	if (!File.exists(p))
		fcFail("the Python executable " + p + " does not exist");
	name = toLowerCase(File.getName(p));
	if (startsWith(name, "fiji-consensus") || startsWith(name, "fiji_consensus")) {
		d = File.getParent(p) + File.separator;
		py = fcFirstFile(newArray(d + "python", d + "python3", d + "python.exe"));
		if (py == "" && !endsWith(name, ".exe")) {
			first = split(File.openAsString(p), "\n");
			if (first.length > 0 && startsWith(first[0], "#!")) {
				words = split(substring(first[0], 2), " \t\r");
				if (words.length > 0 && File.exists(words[0]) && !endsWith(words[0], "env"))
					py = words[0];
			}
		}
		if (py == "")
			fcFail("you chose the fiji-consensus command " + p + ", but no Python interpreter was found beside it\nchoose the Python executable of the environment where fiji-consensus is installed");
		return py;
	}
	return p;
}

function fcPython() {
	py = fcArg("python", "");
	if (py == "")
		py = fcPref("python", "");
	if (FC_BATCH && py == "")
		fcFail("no Python executable given (argument python=...)");
	if (!FC_BATCH && (py == "" || !File.exists(py) || isKeyDown("shift"))) {
		showMessage("Fiji consensus", "Choose the Python executable in which fiji-consensus is installed,\ne.g. .../venv/bin/python or ...\\Scripts\\python.exe (its environment folder or\nthe fiji-consensus command work too; python -c \"import sys; print(sys.executable)\" names it)");
		py = File.openDialog("Python executable with fiji-consensus");
	}
	chosen = py;
	py = fcInterpreter(chosen);
	v = exec(py, "-c", FC_CODE, "--version");
	if (!startsWith(v, "fiji-consensus")) {
		if (replace(v, "[ \t\r\n]", "") == "")
			v = "(nothing on its standard output; in a terminal,  " + py + " -c \"import fiji_consensus\"  shows why)\n";
		via = "";
		if (chosen != py)
			via = " (the interpreter of " + chosen + ")";
		fcFail("fiji-consensus does not run with " + py + via + "\nIts output:\n" + fcTail(v, 12) + "Install it there (" + py + " -m pip install fiji-consensus) or choose the Python of the environment where it is installed");
	}
	if (!FC_BATCH)
		fcSetPref("python", chosen);
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

// The models of a project: ensemble folders (with ensemble.json) and bioimage.io packages (.zip) in models/.
function fcModelNames(project) {
	models = getFileList(project + "/models");
	names = newArray(0);
	for (i = 0; i < models.length; i++) {
		m = models[i];
		if (endsWith(m, "/") && File.exists(project + "/models/" + m + "ensemble.json"))
			names = Array.concat(names, substring(m, 0, lengthOf(m) - 1));
		else if (endsWith(toLowerCase(m), ".zip"))
			names = Array.concat(names, m);
	}
	return names;
}

// A model given by its name in <project>/models/ or by a path; fails when it does not exist.
function fcModelPath(project, model) {
	if (model == "")
		fcFail("no model given (argument model=<name in " + project + "/models>)");
	modelPath = project + "/models/" + model;
	if (!File.exists(modelPath) && File.exists(model))
		modelPath = model;  // a path
	if (!File.exists(modelPath))
		fcFail("the model " + model + " does not exist (looked for " + project + "/models/" + model + ")");
	return modelPath;
}

// A model's name without .zip, checked to be a valid folder name.
function fcModelLabel(modelPath) {
	label = File.getName(modelPath);
	if (endsWith(toLowerCase(label), ".zip"))
		label = substring(label, 0, lengthOf(label) - 4);
	if (!fcValidName(label))
		fcFail("the model name '" + label + "' is not valid: use letters, digits, underscore, dot or minus");
	return label;
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

// Delete a folder and what it holds (files ImageJ lists; used only on folders a failed run of ours made).
function fcRemoveTree(dir) {
	if (!File.isDirectory(dir))
		return;
	files = getFileList(dir);
	for (i = 0; i < files.length; i++) {
		if (endsWith(files[i], "/"))
			fcRemoveTree(dir + "/" + substring(files[i], 0, lengthOf(files[i]) - 1));
		else
			ok = File.delete(dir + "/" + files[i]);
	}
	if (File.exists(dir + "/.fiji-consensus.json"))
		ok = File.delete(dir + "/.fiji-consensus.json");  // the CLI's claim on its output folder (hidden)
	ok = File.delete(dir);
}

function fcStem(name) {
	k = lastIndexOf(name, ".");
	if (k > 0)
		return substring(name, 0, k);
	return name;
}

// The id of the current image: the stem of the file it was opened from (ImageJ renames a second window of
// one file "1114-1.png", so the title is not the id); the title only for an image never saved.
function fcImageId() {
	s = getInfo("image.filename");
	if (s == "")
		s = getTitle();
	id = fcStem(s);
	return id;
}

function fcValidName(s) {
	return matches(s, "[A-Za-z0-9][A-Za-z0-9_.-]*");
}

// A display range that shows the image (a dim 8-bit image is otherwise nearly black); display only.
function fcShowRange() {
	if (bitDepth() == 24)
		return;
	resetMinAndMax();
	run("Enhance Contrast", "saturated=0.35");
}

// The last line of a command's output that is a JSON object holding "key".
function fcJsonLine(text, key) {
	lines = split(text, "\n");
	for (i = lines.length - 1; i >= 0; i--) {
		l = replace(lines[i], "\r", "");
		if (startsWith(l, "{") && indexOf(l, "\"" + key + "\"") >= 0)
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
	json = fcJsonLine(output, "ok");
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
