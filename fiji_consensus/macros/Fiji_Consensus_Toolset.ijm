// Fiji Consensus toolset - fiji-consensus
// Install: copy to Fiji.app/macros/toolsets/ (or run `fiji-consensus fiji install-macros /path/to/Fiji.app`,
// which also puts the macros in Fiji.app/plugins/Fiji_Consensus/), then choose "Fiji Consensus" in the
// toolbar's >> menu.

var fcCommands = newMenu("Fiji Consensus Menu Tool", newArray("Save Expert Annotations", "Compute Consensus", "Show Results", "-", "Train Ensemble", "Predict Ensemble", "-", "Settings...", "About"));

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

function fcRunMacro(file) {
	dirs = newArray(getDirectory("plugins") + "Fiji_Consensus" + File.separator, getDirectory("macros") + "fiji-consensus" + File.separator, getDirectory("macros") + "toolsets" + File.separator);
	for (i = 0; i < dirs.length; i++) {
		if (File.exists(dirs[i] + file)) {
			runMacro(dirs[i] + file);
			return;
		}
	}
	showMessage("Fiji consensus", file + " was not found in Fiji.app/plugins/Fiji_Consensus/.\nInstall the macros with:  fiji-consensus fiji install-macros /path/to/Fiji.app");
}
