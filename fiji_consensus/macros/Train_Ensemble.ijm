// Train_Ensemble.ijm - fiji-consensus
// Runs `fiji-consensus train --project <project> --out <project>/models/<name> --json` (needs the train
// extra: pip install 'fiji-consensus[train]'); training can take long: ImageJ waits for it.
// Asks for the model name, the number of members and the time budget (minutes for the whole ensemble).
// Non-interactive: argument lines python=, project=, name=, members=, minutes=; for quick runs also
// iterations= (per member, replaces minutes) and patch= (training patch size, a multiple of 8).

fcInit();
py = fcPython();
project = fcProject(false);
name = fcArg("name", fcPref("model_name", "ensemble"));
members = fcArg("members", fcPref("train_members", "5"));
minutes = fcArg("minutes", fcPref("train_minutes", "60"));
iterations = fcArg("iterations", "");
patch = fcArg("patch", "256");
if (!FC_BATCH) {
	Dialog.create("Train Ensemble");
	Dialog.addString("Model name (letters, digits, _ . -):", name, 20);
	Dialog.addNumber("Ensemble members:", parseInt(members));
	Dialog.addNumber("Time budget for the whole ensemble (minutes):", parseFloat(minutes));
	Dialog.show();
	name = Dialog.getString();
	members = "" + Dialog.getNumber();
	minutes = "" + Dialog.getNumber();
	fcSetPref("model_name", name);
	fcSetPref("train_members", members);
	fcSetPref("train_minutes", minutes);
}
if (!fcValidName(name))
	fcFail("the model name '" + name + "' is not valid: use letters, digits, _ . -");
nMembers = parseInt(members);
if (isNaN(nMembers) || nMembers < 1)
	fcFail("the number of members must be a whole number >= 1; got '" + members + "'");
budget = parseFloat(minutes);
if (isNaN(budget) || budget <= 0)
	fcFail("the time budget must be a number of minutes > 0; got '" + minutes + "'");
out = project + "/models/" + name;
existing = newArray(0);
if (File.isDirectory(out))
	existing = getFileList(out);
if (existing.length > 0)
	fcFail("the model " + out + " exists; choose another name");
showStatus("fiji-consensus: training an ensemble (this can take long)...");
print("Training " + out + " ...");
if (iterations != "")
	res = exec(py, "-c", FC_CODE, "train", "--project", project, "--out", out, "--members", members, "--iterations", iterations, "--patch-size", patch, "--json");
else
	res = exec(py, "-c", FC_CODE, "train", "--project", project, "--out", out, "--members", members, "--max-minutes", minutes, "--patch-size", patch, "--json");
json = fcResult(res, "train");
outDir = fcJsonGet(json, "out");
print("Trained ensemble: " + outDir);
print("FIJI_CONSENSUS_DONE train " + outDir);

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
