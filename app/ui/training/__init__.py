"""The Training panel (Qt): choose episodes, set the few settings that matter, start, follow,
cancel and resume a `python run.py train` job while the rest of the window keeps collecting demos.

    panel      TrainingPanelWidget: the three parts side by side, the job's control and the 4 Hz poll
    chooser    EpisodeChooserWidget: the store, label/task filters and the ticked episodes
    settings   TrainSettingsForm: preset, steps, batch, learning rate, ..., and the job's buttons
    progress   RunProgressWidget: the followed run's status, progress bar and ETA, loss curves,
               checkpoints and log

What they show comes from the Qt-free `app.studio.training`; GUI thread only.
"""
