"""The Episodes workbench's Qt view (`WorkbenchWidget`) over `app.studio.workbench`."""
