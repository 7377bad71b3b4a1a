"""Training from the window, without Qt: the job's command line, its process, its events as a run
state, and the rows of the episode chooser.

The job is `python run.py train ...` (`app.studio.jobs.train`) in a process of its own, never in
the GUI process; it may outlive the window. So everything a window needs to follow it, or to pick
it up again after a restart, lives in the run folder (its layout: `model.run_folder`): job.json
says which process runs there, train.jsonl holds its events - the trainer appends them itself, so
a run started from a terminal or under torchrun elsewhere (its folder copied back) reads the same
- and train.log the stderr of a job the window started.

    settings       TrainSettings (what the panel's fields ask for) -> the `run.py train` command line
    job            starting a job detached with its output in the run folder, liveness, cancel
    run_state      RunState: the events of train.jsonl -> stage, progress, ETA, losses, outcome;
                   the checkpoints table
    follower       RunFollower: one run folder as the window follows it (new lines, crash verdict);
                   the runs a window can list
    episode_rows   the episode chooser's rows from a store (scanned in a worker thread)

No torch here: the app builds a command line and reads JSON and folders (model.run_folder is
torch-free).
"""
