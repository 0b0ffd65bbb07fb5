// Fiji Consensus toolset - fiji-consensus
// Installed as Fiji.app/macros/toolsets/Fiji Consensus.ijm by `fiji-consensus fiji install-macros
// /path/to/Fiji.app`, which also puts the macros in Fiji.app/plugins/Fiji_Consensus/; then choose
// "Fiji Consensus" in the toolbar's >> menu. (By hand: `fiji-consensus fiji write-macros FOLDER` and copy
// FOLDER's plugins/ and macros/ folders into Fiji.app.)

var fcCommands = newMenu("Fiji Consensus Menu Tool", newArray("Next Planned Image", "Save Expert Annotations", "Compute Consensus", "Show Results", "-", "Train Ensemble", "Calibrate Model", "Predict Ensemble", "-", "Settings...", "About"));

macro "Fiji Consensus Menu Tool - C000F0077Cf90F9077C5beF0977C0a7F9977Cfff" {
	cmd = getArgument();
	if (cmd == "-")
		exit();
	if (cmd == "Settings...") {
		Dialog.create("Fiji consensus settings");
		Dialog.addString("Python executable", call("ij.Prefs.get", "fiji_consensus.python", ""), 60);
		Dialog.addString("Project folder", call("ij.Prefs.get", "fiji_consensus.project", ""), 60);
		Dialog.addMessage("Leave a field empty to be asked again.");
		Dialog.show();
		call("ij.Prefs.set", "fiji_consensus.python", Dialog.getString());
		call("ij.Prefs.set", "fiji_consensus.project", Dialog.getString());
		exit();
	}
	if (cmd == "About") {
		showMessage("Fiji consensus", "Multi-expert consensus (STAPLE, majority, objects), U-Net ensembles and\nuncertainty for Fiji, after Segebarth et al., eLife 2020.\n \nThe macros call the fiji-consensus command line of a Python installation\n(asked once; Settings... changes it).");
		exit();
	}
	fcRunMacro(replace(cmd, " ", "_") + ".ijm");
}

macro "Save Expert Annotations Action Tool - C059R11eeC0a7L36a6L3aa8Cf90O8866" {
	fcRunMacro("Save_Expert_Annotations.ijm");
}

macro "Compute Consensus Action Tool - C059O11aaCf90O55aaCfffO3399" {
	fcRunMacro("Compute_Consensus.ijm");
}

// The installed macros: plugins/Fiji_Consensus/ (install-macros), or plugins/ and macros/ (copied by hand).
function fcRunMacro(file) {
	s = File.separator;
	dirs = newArray(getDirectory("plugins") + "Fiji_Consensus" + s, getDirectory("plugins"), getDirectory("macros") + "Fiji_Consensus" + s, getDirectory("macros") + "fiji-consensus" + s, getDirectory("macros"), getDirectory("macros") + "toolsets" + s);
	for (i = 0; i < dirs.length; i++) {
		if (File.exists(dirs[i] + file)) {
			runMacro(dirs[i] + file);
			return;
		}
	}
	msg = file + " was not found in " + dirs[0] + " (nor in " + dirs[1] + " or " + dirs[4] + ").\nInstall the macros with:  fiji-consensus fiji install-macros /path/to/Fiji.app";
	print("FIJI_CONSENSUS_ERROR: " + msg);
	showMessage("Fiji consensus", msg);
}
