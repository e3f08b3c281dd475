"""DiffRate's method at inference: schedules (`schedule`), the token operations (`merge`), the timm patch that runs
a schedule with real token removal (`patch`), the paper's cost formula (`flops`) and the uniform-merging baseline
(`baseline`). The public names are re-exported by `keenvision.diffrate`."""
