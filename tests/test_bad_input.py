"""Bad input, table-driven: one command line per case, each must end with exit code 2 and one `error:` line
naming the problem, before any work, with every file left as it was.

The workspace holds what a user's checkout would: a copy of configs/ with test sweep files (among them an empty
one, a comment-only one and one with an objective no record holds), a stored sweep (`results/tiny`: a real
one-trial run, its study.db and run directory), an empty study.db over old run directories (`results/empty`),
a committed study whose record file is binary (`studies/d2l_lenet_bn`), and a plain file. Every case runs in it
and is compared with a snapshot (path, size and sha1 of every file) taken before.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from normbench.cli import main
from normbench.config import config_dir
from normbench.resources import OVERSUBSCRIBE_PER_CORE, cpu_cores
from tests.sweep_support import ONE_POINT, PG_URL, free_port, tmpfs

COMMON = ["trainer.max_epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu", "out_dir={ws}/run"]
RUN = ["data=synthetic", "data.num_train=64", "data.num_test=32", *COMMON]
SWEEP = ["results_dir={ws}/results"]
CORES = cpu_cores()
OVER = OVERSUBSCRIBE_PER_CORE * CORES + 1  # the least count refused (a bug would start only this many)
REFUSED = "postgresql://postgres@127.0.0.1:{port}/normbench"  # nothing listens on {port}
NO_DB = PG_URL.rsplit("/", 1)[0] + "/normbench_no_such_database"

# (case id, command line, a part of the one error line)
CASES = [
    # item 4: every float option rejects NaN/inf and values outside its range
    ("lr-inf", ["run", *RUN, "optim.lr=inf"], "optim.lr must be a finite number, got inf"),
    ("lr-nan", ["run", *RUN, "optim.lr=nan"], "optim.lr must be a finite number, got nan"),
    ("lr-zero", ["run", *RUN, "optim.lr=0"], "optim.lr must be > 0, got 0.0"),
    ("momentum-nan", ["run", *RUN, "optim.momentum=nan"], "optim.momentum must be a finite number, got nan"),
    ("momentum-5", ["run", *RUN, "optim.momentum=5"], "optim.momentum must be in [0, 1), got 5.0"),
    ("momentum-1", ["run", *RUN, "optim.momentum=1"], "optim.momentum must be in [0, 1), got 1.0"),
    ("weight-decay-inf", ["run", *RUN, "optim.weight_decay=inf"], "optim.weight_decay must be a finite number"),
    ("weight-decay-neg", ["run", *RUN, "optim.weight_decay=-0.1"], "optim.weight_decay must be >= 0, got -0.1"),
    ("scheduler-step", ["run", *RUN, "optim.scheduler=step"],
     "optim.scheduler must be one of none, cosine, linear; got 'step'"),
    ("warmup-neg", ["run", *RUN, "optim.warmup_steps=-1"], "optim.warmup_steps must be >= 0, got -1"),
    ("warmup-fraction", ["run", *RUN, "optim.warmup_steps=0.5"], "optim.warmup_steps must be an integer, got 0.5"),
    ("norm-momentum-inf", ["run", *RUN, "norm.momentum=inf"], "norm.momentum must be a finite number, got inf"),
    ("norm-eps-nan", ["run", *RUN, "norm.eps=nan"], "norm.eps must be a finite number, got nan"),
    ("norm-eps-neg", ["run", *RUN, "norm.eps=-1"], "eps must be > 0, got -1.0"),
    ("val-fraction-inf", ["run", *RUN, "data.val_fraction=-inf"], "data.val_fraction must be a finite number"),
    ("val-fraction-1", ["run", *RUN, "data.val_fraction=1.0"], "data.val_fraction must be in [0, 1), got 1.0"),
    ("clip-neg", ["run", *RUN, "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val must be > 0 or null"),
    ("noise-nan", ["run", *RUN, "data.noise=nan"], "data.noise must be a finite number, got nan"),
    ("noise-neg", ["run", *RUN, "data.noise=-1"], "noise must be >= 0, got -1.0"),
    # item 8: user errors get one line, before any work
    ("seed-negative", ["run", *RUN, "seed=-1"], "seed must be in [0, 4294967295] (numpy's seed range), got -1"),
    ("seed-2^32", ["run", *RUN, "seed=4294967296"], "seed must be in [0, 4294967295] (numpy's seed range), got"),
    ("out-dir-file", ["run", *RUN, "out_dir={ws}/afile"], "out_dir={ws}/afile is an existing file, not a directory"),
    ("out-dir-under-file", ["run", *RUN, "out_dir={ws}/afile/run"], "afile is a file, so no directory can be made"),
    ("out-dir-read-only", ["run", *RUN, "out_dir={ro}/run"], "is on a read-only file system"),
    ("strategy-bogus", ["run", *RUN, "trainer.strategy=bogus"], "trainer.strategy 'bogus' is unknown; accepted: auto"),
    ("threads-0", ["run", *RUN, "trainer.threads=0"], "trainer.threads must be >= 1, got 0"),
    ("num-classes-1", ["run", *RUN, "data.num_classes=1"], "num_classes must be >= 2 (a classifier needs two"),
    ("image-size-huge", ["run", *RUN, "data.image_size=100000"], "image_size must be <= 512, got 100000"),
    ("synthetic-too-big", ["run", *RUN, "data.num_train=1000000", "data.image_size=64"], "exceeds the limit of"),
    ("sweep-file-list", ["run", "sweep=listy", *SWEEP], "listy.yaml must hold a mapping of settings"),
    ("table-columns-5", ["table", "sweep=tiny", *SWEEP, "table.columns=5"], "table.columns must be a list of"),
    ("table-column-bare-number", ["table", "sweep=tiny", *SWEEP, "table.columns=[5]"],
     "table.columns entries are metric names or mappings with a 'key'; got 5"),
    ("table-column-no-key", ["table", "sweep=tiny", *SWEEP, "table.columns=[{label: x}]"], "with a 'key'"),
    ("table-column-scale-text", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: test_acc, scale: abc}]"],
     "scale must be a finite, non-zero number"),
    ("table-column-digits", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: test_acc, digits: -1}]"],
     "digits must be an integer in [0, 12]"),
    ("table-column-better", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: test_acc, better: up}]"],
     "better must be max, min, absmin or null"),
    ("table-column-field", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: test_acc, colour: red}]"],
     "unknown field(s) colour"),
    ("sweep-storage-refused", ["run", "sweep=tiny", *SWEEP, "sweep.storage=" + REFUSED],
     "cannot open storage postgresql://postgres@127.0.0.1:{port}/normbench: connection failed"),
    ("sweep-storage-no-database", ["run", "sweep=tiny", *SWEEP, "sweep.storage=" + NO_DB],
     'database "normbench_no_such_database" does not exist'),
    ("table-storage-refused", ["table", "sweep=tiny", *SWEEP, "sweep.storage=" + REFUSED], "cannot open storage"),
    # items 1 and 2: a resume whose numbers would differ is refused, naming the setting, old and new values
    ("resume-lr-scaling", ["run", "sweep=tiny", *SWEEP, "sweep.lr_scaling={base_batch_size: 64}"],
     "was run with sweep.lr_scaling None, this run has {'base_batch_size': 64}"),
    ("resume-threads", ["run", "sweep=tiny", *SWEEP, "trainer.threads=2"], "(trainer.threads: 1 -> 2)"),
    ("resume-base", ["run", "sweep=tiny", *SWEEP, "optim.lr=0.5"], "(optim.lr: 1.0 -> 0.5)"),
    ("resume-pruner", ["run", "sweep=tiny", *SWEEP, "sweep.pruner=median"], "sweep.pruner 'none', this run has"),
    # item 9
    ("sqlite-dir-missing", ["run", "sweep=tiny", *SWEEP, "sweep.storage=sqlite:////nonexistent-nb/dir/x.db"],
     "directory /nonexistent-nb/dir does not exist; create it first"),
    ("resume-empty-db-over-trials", ["run", "sweep=empty", *SWEEP],
     "trials holds 1 run directories but storage sqlite:///{ws}/results/empty/study.db has no study 'empty' "
     "(the file is empty)"),
    ("table-empty-db", ["table", "sweep=empty", *SWEEP], "empty/study.db holds no Optuna study (0 bytes)"),
    ("plot-empty-db", ["plot", "sweep=empty", *SWEEP], "empty/study.db holds no Optuna study (0 bytes)"),
    ("dashboard-empty-db", ["dashboard", "sweep=empty", *SWEEP], "holds no Optuna study (0 bytes)"),
    ("table-scale-nan", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: test_acc, scale: .nan}]"],
     "scale must be a finite, non-zero number (e.g. 100 for percent); got nan"),
    ("train-subset-too-big", ["run", *COMMON, "data.train_subset=100000"],
     "data.train_subset=100000 must be in [1, 60000]: fashion_mnist has 60000 train samples"),
    ("test-subset-too-big", ["run", *RUN, "data.test_subset=33"], "data.test_subset=33 must be in [1, 32]"),
    ("synthetic-root-missing", ["run", *RUN, "data.root=/nonexistent-nb/data"],
     "data.root=/nonexistent-nb/data does not exist (synthetic data are generated, not read"),
    # multirun, sweep files and config directories from outside the package, study names
    ("multirun-sweep-file", ["run", "-m", "sweep=tiny", *SWEEP], "a sweep file runs without -m"),
    ("multirun-interval", ["run", "--multirun", "data=synthetic", "optim.lr=interval(0.1,1)", *SWEEP],
     "interval(...) needs a search"),
    ("multirun-unknown-norm", ["run", "-m", "data=synthetic", "norm=bn,nosuch", *SWEEP],
     "unknown norm 'nosuch'; accepted: bn"),
    ("multirun-out-dir", ["run", "-m", *RUN, "norm=bn,gn", *SWEEP], "out_dir is set per trial"),
    ("multirun-cfg", ["run", "-m", "--cfg", "job", "norm=bn,gn"], "--cfg prints one run's config; drop -m"),
    ("values-without-multirun", ["run", *RUN, "norm=bn,gn"], "lists several values; run it as a multirun (`run -m"),
    ("sweep-path-missing", ["run", "sweep={ws}/nope.yaml", *SWEEP], "sweep file {ws}/nope.yaml does not exist"),
    ("table-sweep-path-missing", ["table", "sweep={ws}/nope.yaml", *SWEEP], "sweep file {ws}/nope.yaml does not exist"),
    ("searchpath-missing", ["run", *RUN, "hydra.searchpath=[file:///nonexistent-nb/configs]"],
     "hydra.searchpath: /nonexistent-nb/configs is not a directory"),
    ("searchpath-pkg", ["run", *RUN, "hydra.searchpath=[pkg://somewhere]"],
     "hydra.searchpath takes a list of directories (file:///path or a path), got 'pkg://somewhere'"),
    ("hydra-run-dir", ["run", *RUN, "hydra.run.dir=x"], "hydra.* settings are not used"),
    ("study-name-slash", ["run", "sweep=tiny", *SWEEP, "sweep.study_name=a/b"],
     "study_name must be a folder name (letters, digits, _ . -), got 'a/b'"),
    # the trainer knobs, several loggers, checkpoints
    ("max-steps-0", ["run", *RUN, "trainer.max_steps=0"], "trainer.max_steps must be >= 1 or null, got 0"),
    ("limit-train-batches-0", ["run", *RUN, "trainer.limit_train_batches=0"],
     "trainer.limit_train_batches must be an integer >= 1 (batches per epoch), a fraction in (0, 1] or null, got 0"),
    ("limit-train-batches-1.5", ["run", *RUN, "trainer.limit_train_batches=1.5"], "a fraction in (0, 1] or null"),
    ("profiler-bogus", ["run", *RUN, "trainer.profiler=pytorch"],
     "trainer.profiler must be one of simple, advanced or null, got 'pytorch'"),
    ("devices-0", ["run", *RUN, "trainer.devices=0"], "trainer.devices must be >= 1 or auto, got 0"),
    ("devices-text", ["run", *RUN, "trainer.devices=many"], "trainer.devices must be an integer or one of auto"),
    ("deterministic-text", ["run", *RUN, "trainer.deterministic=maybe"], "trainer.deterministic must be true or"),
    ("fast-dev-run-3", ["run", *RUN, "trainer.fast_dev_run=3"], "trainer.fast_dev_run must be true or false, got 3"),
    ("logger-list-unknown", ["run", *RUN, "logger=[csv,bogus]"], "unknown logger 'bogus'; accepted: csv, none,"),
    ("logger-list-none", ["run", *RUN, "logger=[csv,none]"], "logger=[...] takes distinct choices among csv,"),
    ("logger-list-twice", ["run", *RUN, "logger=[csv,csv]"], "logger=[...] takes distinct choices"),
    ("norm-list", ["run", *RUN, "norm=[bn,gn]"], "norm takes one choice; accepted lists: logger=[a,b]"),
    ("ckpt-path-missing", ["run", *RUN, "trainer.ckpt_path={ws}/none.ckpt"], "no checkpoint file {ws}/none.ckpt"),
    ("ckpt-path-not-a-checkpoint", ["run", *RUN, "trainer.ckpt_path={ws}/afile"], "cannot be read as a checkpoint"),
    # issue 26 -- resources: workers and threads far above the cores (the override: allow_oversubscribe=true)
    ("sweep-workers-over", ["run", "sweep=tiny", *SWEEP, f"sweep.n_workers={OVER}", "sweep.max_trials=1"],
     f"sweep.n_workers={OVER} is more than 4 per CPU core ({CORES} core(s) here: at most {OVER - 1})"),
    ("multirun-workers-over", ["run", "-m", *RUN[:-1], "norm=bn,gn", *SWEEP, f"sweep.n_workers={OVER}"],
     f"sweep.n_workers={OVER} is more than 4 per CPU core"),
    ("reproduce-workers-over", ["reproduce", "nosuch", f"sweep.n_workers={OVER}"],
     f"sweep.n_workers={OVER} is more than 4 per CPU core"),
    ("threads-over", ["run", *RUN, f"trainer.threads={OVER}"], f"trainer.threads={OVER} is more than 4 per CPU core"),
    ("sweep-threads-over", ["run", "sweep=tiny", *SWEEP, f"trainer.threads={OVER}"],
     "add allow_oversubscribe=true to run it anyway"),
    ("allow-oversubscribe-text", ["run", *RUN, "allow_oversubscribe=maybe"],
     "allow_oversubscribe must be true or false, got 'maybe'"),
    # ... objectives and columns the record never holds, empty sweep files
    ("sweep-objective-unknown", ["run", "sweep=tiny", *SWEEP, "sweep.objective=nosuch"],
     "sweep tiny: objective 'nosuch' is not a numeric field of the run record; accepted: train_acc"),
    ("sweep-objective-text-field", ["run", "sweep=tiny", *SWEEP, "sweep.objective=status"],
     "objective 'status' is not a numeric field"),
    ("sweep-file-objective", ["run", "sweep=badobjective", *SWEEP], "objective 'nosuch_metric' is not a numeric"),
    ("multirun-objective", ["run", "-m", *RUN[:-1], "norm=bn,gn", *SWEEP, "sweep.objective=nosuch"],
     "objective 'nosuch' is not a numeric field"),
    ("table-column-unknown", ["table", "sweep=tiny", *SWEEP, "table.columns=[nosuch]"],
     "table.columns: 'nosuch' is not a numeric field of the run record"),
    ("table-column-key-unknown", ["table", "sweep=tiny", *SWEEP, "table.columns=[{key: nosuch, digits: 2}]"],
     "table.columns: 'nosuch' is not a numeric field"),
    ("sweep-file-empty", ["run", "sweep=blank", *SWEEP], "blank.yaml is empty (or only comments)"),
    ("sweep-file-comments", ["run", "sweep=comments", *SWEEP], "comments.yaml is empty (or only comments)"),
    ("sweep-path-empty", ["run", "sweep={ws}/configs/sweep/blank.yaml", *SWEEP], "is empty (or only comments)"),
    # ... honest records
    ("accumulate-longer-than-epoch", ["run", *RUN, "trainer.accumulate_grad_batches=1000"],
     "trainer.accumulate_grad_batches=1000 is longer than an epoch (2 training batches of 32 per device)"),
    ("accumulate-3-of-2", ["run", *RUN, "trainer.accumulate_grad_batches=3"], "accepted: 1 to 2"),
    ("accumulate-over-limit", ["run", *RUN, "data.num_train=256", "trainer.limit_train_batches=2",
                               "trainer.accumulate_grad_batches=4"], "longer than an epoch (2 training batches"),
    ("num-classes-100000", ["run", *RUN, "data.num_classes=100000"],
     "num_classes=100000 exceeds num_train=64 (a class without a training sample is never learnt)"),
    # ... what used to end in a traceback
    ("nesterov-no-momentum", ["run", *RUN, "optim.nesterov=true"], "optim.nesterov=true needs optim.momentum > 0"),
    ("wandb-project-slash", ["run", *RUN, "logger=wandb", "logger.project=a/b"],
     "logger.project='a/b' holds /; W&B names take 1-128 characters"),
    ("wandb-project-empty", ["run", *RUN, "logger=wandb", "logger.project=''"], "logger.project='' is empty"),
    ("wandb-entity-colon", ["run", *RUN, "logger=wandb", "logger.entity=a:b"], "logger.entity='a:b' holds :"),
    ("study-name-300", ["run", "sweep=tiny", *SWEEP, "sweep.study_name=" + "s" * 300],
     "study_name must be a folder name of at most 128 characters, got 300 characters"),
    ("study-name-dotdot", ["run", "sweep=tiny", *SWEEP, "sweep.study_name=.."], "must be a folder name"),
    ("sqlite-storage-dir", ["run", "sweep=tiny", *SWEEP, "sweep.storage=sqlite:///{ws}/results"],
     "sweep.storage=sqlite:///{ws}/results names the directory {ws}/results; give a database file"),
    ("sqlite-storage-memory", ["run", "sweep=tiny", *SWEEP, "sweep.storage=sqlite:///"], "names no database file"),
    ("out-dir-proc", ["run", *RUN, "out_dir=/proc/normbench-nb/run"], "no directory can be made in /proc"),
    ("results-dir-proc", ["run", "sweep=tiny", "results_dir=/proc/normbench-nb"],
     "results_dir=/proc/normbench-nb: no directory can be made in /proc"),
    ("reproduce-binary-records", ["reproduce", "d2l_lenet_bn", "--check", "results_dir={ws}/studies"],
     "problem(s) in the committed records under {ws}/studies/d2l_lenet_bn/records (listed above)"),
    # ... paths: every command that makes a path of a study name applies run's rule
    ("table-study-name-outside", ["table", "sweep=tiny", *SWEEP, "sweep.study_name=../outside"],
     "sweep.study_name must be a folder name (letters, digits, _ . -), got '../outside'"),
    ("plot-study-name-outside", ["plot", "sweep=tiny", *SWEEP, "sweep.study_name=../outside"], "got '../outside'"),
    ("dashboard-study-name-outside", ["dashboard", "sweep=tiny", *SWEEP, "sweep.study_name=a/../../b"],
     "must be a folder name"),
    ("table-study-name-long", ["table", "sweep=tiny", *SWEEP, "sweep.study_name=" + "s" * 200], "at most 128"),
    ("table-sweep-dotdot", ["table", "sweep=..", *SWEEP], "sweep must be a folder name"),
    # ... beyond the list: the run config's keys with a wrong type, out of range, or empty
    ("batch-size-text", ["run", *RUN, "data.batch_size=abc"], "data.batch_size must be an integer, got 'abc'"),
    ("batch-size-0", ["run", *RUN, "data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
    ("batch-size-empty", ["run", *RUN, "data.batch_size="], "data.batch_size must be an integer"),
    ("eval-batch-size-0", ["run", *RUN, "data.eval_batch_size=0"], "data.eval_batch_size must be >= 1, got 0"),
    ("val-fraction-text", ["run", *RUN, "data.val_fraction=abc"], "data.val_fraction must be a"),
    ("drop-last-text", ["run", *RUN, "data.drop_last=maybe"], "data.drop_last must be"),
    ("augment-2", ["run", *RUN, "data.augment=2"], "data.augment must be"),
    ("composition-bogus", ["run", *RUN, "data.batch_composition=bogus"], "bogus"),
    ("optim-name-bogus", ["run", *RUN, "optim.name=rmsprop"], "optim.name must be one of sgd, adamw"),
    ("lr-text", ["run", *RUN, "optim.lr=abc"], "optim.lr must be a"),
    ("lr-empty", ["run", *RUN, "optim.lr="], "optim.lr must be a"),
    ("nesterov-text", ["run", *RUN, "optim.nesterov=maybe"], "optim.nesterov must be"),
    ("norm-weight-decay-neg", ["run", *RUN, "optim.norm_weight_decay=-1"], "optim.norm_weight_decay must be >= 0"),
    ("max-epochs-0", ["run", *RUN, "trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0"),
    ("max-epochs-text", ["run", *RUN, "trainer.max_epochs=abc"], "trainer.max_epochs must be an integer"),
    ("max-epochs-empty", ["run", *RUN, "trainer.max_epochs="], "trainer.max_epochs must be an integer"),
    ("accumulate-0", ["run", *RUN, "trainer.accumulate_grad_batches=0"],
     "trainer.accumulate_grad_batches must be >= 1"),
    ("precision-64", ["run", *RUN, "trainer.precision=64"], "trainer.precision must be one of"),
    ("accelerator-tpu", ["run", *RUN, "trainer.accelerator=tpu"], "trainer.accelerator must be one of"),
    ("emulate-devices-0", ["run", *RUN, "trainer.emulate_devices=0"], "trainer.emulate_devices must be >= 1"),
    ("chunk-steps-0", ["run", *RUN, "trainer.chunk_steps=0"], "trainer.chunk_steps must be an integer >= 1 or auto"),
    ("chunk-steps-text", ["run", *RUN, "trainer.chunk_steps=abc"], "trainer.chunk_steps"),
    ("compile-mode-bogus", ["run", *RUN, "trainer.compile_mode=fast"], "trainer.compile_mode must be one of"),
    ("checkpoint-text", ["run", *RUN, "trainer.checkpoint=maybe"], "trainer.checkpoint must be"),
    ("clip-text", ["run", *RUN, "trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val must be"),
    ("threads-text", ["run", *RUN, "trainer.threads=abc"], "trainer.threads must be an integer"),
    ("threads-fraction", ["run", *RUN, "trainer.threads=1.5"], "trainer.threads must be an integer"),
    ("calib-samples-1", ["run", *RUN, "calib.samples=1"], "calib.samples must be >= 2, got 1"),
    ("calib-ece-bins-0", ["run", *RUN, "calib.ece_bins=0"], "calib.ece_bins must be >= 1, got 0"),
    ("calib-every-0", ["run", *RUN, "calib.every_n_epochs=0"], "calib.every_n_epochs must be >= 1, got 0"),
    ("calib-alpha-2", ["run", *RUN, "calib.weighted_alpha=2"], "calib.weighted_alpha must be in [0, 1]"),
    ("calib-enabled-text", ["run", *RUN, "calib.enabled=maybe"], "calib.enabled must be"),
    ("seed-text", ["run", *RUN, "seed=abc"], "seed must be an integer, got 'abc'"),
    ("seed-fraction", ["run", *RUN, "seed=1.5"], "seed must be an integer"),
    ("seed-empty", ["run", *RUN, "seed="], "seed must be an integer"),
    ("norm-momentum-text", ["run", *RUN, "norm.momentum=abc"], "norm.momentum must be a number or null, got 'abc'"),
    ("norm-momentum-2", ["run", *RUN, "norm.momentum=2"], "momentum"),
    ("norm-eps-0", ["run", *RUN, "norm.eps=0"], "eps must be > 0"),
    ("gn-groups-0", ["run", *RUN, "norm=gn", "norm.groups=0"], "groups"),
    ("gn-groups-text", ["run", *RUN, "norm=gn", "norm.groups=abc"], "norm.groups must be"),
    ("model-unknown", ["run", *RUN, "model=nosuch"], "unknown model 'nosuch'; accepted:"),
    ("data-unknown", ["run", *RUN, "data=nosuch"], "unknown data 'nosuch'; accepted:"),
    # ... the sweep's settings
    ("sweep-workers-0", ["run", "sweep=tiny", *SWEEP, "sweep.n_workers=0"], "n_workers must be >= 1, got 0"),
    ("sweep-workers-text", ["run", "sweep=tiny", *SWEEP, "sweep.n_workers=abc"], "n_workers must be an integer"),
    ("sweep-max-trials-0", ["run", "sweep=tiny", *SWEEP, "sweep.max_trials=0"], "max_trials must be >= 1"),
    ("sweep-heartbeat-0", ["run", "sweep=tiny", *SWEEP, "sweep.heartbeat_interval=0"], "heartbeat_interval must be"),
    ("sweep-sampler-bogus", ["run", "sweep=tiny", *SWEEP, "sweep.sampler=bogus"], "sampler must be one of"),
    ("sweep-direction-up", ["run", "sweep=tiny", *SWEEP, "sweep.direction=up"], "direction must be one of"),
    ("sweep-patience-0", ["run", "sweep=tiny", *SWEEP, "sweep.storage_patience=0"], "storage_patience must be >= 1"),
    ("sweep-objective-empty", ["run", "sweep=tiny", *SWEEP, "sweep.objective=''"], "objective must be the name of"),
    ("sweep-study-name-empty", ["run", "sweep=tiny", *SWEEP, "sweep.study_name=''"], "must be a folder name"),
    ("sweep-trials-per-device-0", ["run", "sweep=tiny", *SWEEP, "sweep.trials_per_device=0"],
     "trials_per_device must be >= 1"),
    ("sweep-storage-number", ["run", "sweep=tiny", *SWEEP, "sweep.storage=5"], "storage must be a database URL"),
    ("sweep-storage-not-url", ["run", "sweep=tiny", *SWEEP, "sweep.storage=nota-url"], "is not a database URL"),
    ("sweep-pruner-bogus", ["run", "sweep=tiny", *SWEEP, "sweep.pruner=bogus"], "pruner must be one of"),
    ("sweep-seeds-empty", ["run", "sweep=tiny", *SWEEP, "sweep.seeds=[]"], "seeds must be a non-empty list"),
    ("sweep-key-unknown", ["run", "sweep=tiny", *SWEEP, "sweep.nosuch=1"], "unknown key 'sweep.nosuch'"),
    ("sweep-unknown", ["run", "sweep=nosuch", *SWEEP], "unknown sweep 'nosuch'; accepted:"),
    # ... the report commands' options
    ("table-level-2", ["table", "sweep=tiny", *SWEEP, "table.level=2"],
     "table.level must be a confidence level in (0, 1), e.g. 0.95, got 2"),
    ("table-level-text", ["table", "sweep=tiny", *SWEEP, "table.level=abc"], "table.level must be a confidence"),
    ("table-layout-wide", ["table", "sweep=tiny", *SWEEP, "table.layout=wide"], "table.layout must be long or pivot"),
    ("table-metric-loss", ["table", "sweep=tiny", *SWEEP, "table.metric=loss"], "table.metric must be accuracy or"),
    ("table-compare-metric", ["table", "sweep=tiny", *SWEEP, "table.compare_metric=nosuch"],
     "table.compare_metric: 'nosuch' is not a numeric field"),
    ("table-compare-key-empty", ["table", "sweep=tiny", *SWEEP, "table.compare_key=''"],
     "table.compare_key must be a non-empty string"),
    ("table-labels-5", ["table", "sweep=tiny", *SWEEP, "table.labels=5"], "table.labels must be a mapping"),
    ("table-dims-5", ["table", "sweep=tiny", *SWEEP, "table.dims=5"], "table.dims must be a key or a non-empty list"),
    ("table-references-5", ["table", "sweep=tiny", *SWEEP, "table.references=5"],
     "table.references must be a list of mappings"),
    ("table-caption-list", ["table", "sweep=tiny", *SWEEP, "table.caption=[1]"], "table.caption must be a non-empty"),
    ("table-row-options-text", ["table", "sweep=tiny", *SWEEP, "table.row_options=maybe"],
     "table.row_options must be true or false, got 'maybe'"),
    ("table-deltas-only-3", ["table", "sweep=tiny", *SWEEP, "table.deltas_only=3"], "table.deltas_only must be true"),
    ("table-columns-empty-list", ["table", "sweep=tiny", *SWEEP, "table.columns=[]"],
     "table.columns must be a non-empty list of columns"),
    ("table-pivot-value", ["table", "sweep=tiny", *SWEEP, "table.layout=pivot", "table.value=nosuch"],
     "table.value: 'nosuch' is not a numeric field"),
    ("table-storage-number", ["table", "sweep=tiny", *SWEEP, "sweep.storage=5"], "sweep.storage=5 is not a database"),
    ("table-storage-not-url", ["table", "sweep=tiny", *SWEEP, "sweep.storage=nota-url"], "is not a database URL"),
    ("table-key-unknown", ["table", "sweep=tiny", *SWEEP, "table.nosuch=1"], "unknown key 'table.nosuch'"),
    ("table-no-sweep", ["table", *SWEEP], "'table' needs sweep=NAME"),
    ("table-bare-word", ["table", "sweep=tiny", *SWEEP, "garbage"], "'table' takes key=value arguments"),
    ("plot-figures-5", ["plot", "sweep=tiny", *SWEEP, "report.figures=5"], "report.figures must be a key or"),
    ("plot-figures-unknown", ["plot", "sweep=tiny", *SWEEP, "report.figures=[nosuch]"], "unknown figure 'nosuch'"),
    ("plot-formats-gif", ["plot", "sweep=tiny", *SWEEP, "report.formats=[gif]"],
     "report.formats must be a non-empty list of png, pdf, svg, got ['gif']"),
    ("plot-formats-empty", ["plot", "sweep=tiny", *SWEEP, "report.formats=[]"], "report.formats must be a non-empty"),
    ("plot-calib-metric", ["plot", "sweep=tiny", *SWEEP, "report.calib_metric=nosuch"],
     "report.calib_metric: 'nosuch' is not a numeric field"),
    ("plot-ema-metric-5", ["plot", "sweep=tiny", *SWEEP, "report.ema_metric=5"], "report.ema_metric must be a non"),
    ("plot-key-unknown", ["plot", "sweep=tiny", *SWEEP, "report.nosuch=1"], "unknown key 'report.nosuch'"),
    ("dashboard-mode-bogus", ["dashboard", "sweep=tiny", *SWEEP, "report.mode=bogus"], "bogus"),
    ("dashboard-artifact-text", ["dashboard", "sweep=tiny", *SWEEP, "report.artifact=maybe"],
     "report.artifact must be true or false"),
    ("dashboard-project-slash", ["dashboard", "sweep=tiny", *SWEEP, "report.project=a/b"],
     "report.project='a/b' holds /"),
    ("reproduce-unknown", ["reproduce", "nosuch", "--check"], "unknown study 'nosuch'; accepted:"),
    ("reproduce-workers-0", ["reproduce", "d2l_lenet_bn", "sweep.n_workers=0"], "sweep.n_workers must be an integer"),
    ("reproduce-workers-text", ["reproduce", "d2l_lenet_bn", "sweep.n_workers=abc"], "sweep.n_workers must be an"),
    ("reproduce-replay-0", ["reproduce", "d2l_lenet_bn", "--replay", "0"], "--replay N: N must be an integer >= 1"),
    ("reproduce-flag-unknown", ["reproduce", "d2l_lenet_bn", "--bogus"], "unknown flag '--bogus'"),
    ("reproduce-part-unknown", ["reproduce", "d2l_lenet_bn", "part=nosuch"], "has no part 'nosuch'"),
    ("list-extra", ["list", "extra"], "'list' takes no arguments"),
]


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (path.stat().st_size, hashlib.sha1(path.read_bytes()).hexdigest())
        else:
            out[str(path.relative_to(root))] = (-1, "dir")
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A stored one-trial sweep and the other files the cases must leave alone (built once)."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(config_dir(), ws / "configs")
    sweeps = ws / "configs" / "sweep"
    (sweeps / "tiny.yaml").write_text(ONE_POINT)
    (sweeps / "empty.yaml").write_text(ONE_POINT)
    (sweeps / "listy.yaml").write_text("- norm: bn\n- norm: gn\n")
    (sweeps / "blank.yaml").write_text("")
    (sweeps / "comments.yaml").write_text("# a sweep to be written\n\n# (nothing yet)\n")
    (sweeps / "badobjective.yaml").write_text(ONE_POINT.replace("objective: val_acc", "objective: nosuch_metric"))
    binary = ws / "studies" / "d2l_lenet_bn" / "records"  # a committed study whose record file is not text
    binary.mkdir(parents=True)
    (binary / "main.jsonl").write_bytes(bytes(range(256)) * 4)
    (ws / "afile").write_text("a file, not a directory\n")
    empty = ws / "results" / "empty"
    (empty / "trials" / "0").mkdir(parents=True)
    (empty / "trials" / "0" / "summary.json").write_text('{"status": "ok"}\n')
    (empty / "study.db").touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMBENCH_CONFIG_DIR", str(ws / "configs"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the stored study runs with trainer.threads=1
        try:
            assert main(["run", "sweep=tiny", f"results_dir={ws / 'results'}"]) == 0
        finally:
            torch.set_num_threads(threads)
    return ws


@pytest.fixture(scope="module")
def readonly_dir():
    """A read-only file system (a tmpfs mounted ro; None where mounting is not allowed)."""
    try:
        with tmpfs("1m", readonly=True) as where:
            yield where
    except pytest.skip.Exception:
        yield None


@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, argv, message, workspace, readonly_dir,
                                                          monkeypatch, capsys):
    if any("{ro}" in a for a in argv) and readonly_dir is None:
        pytest.skip("needs root to mount a read-only tmpfs")
    if "no-database" in case:
        psycopg = pytest.importorskip("psycopg")
        try:
            psycopg.connect(PG_URL, connect_timeout=3).close()
        except psycopg.OperationalError:
            pytest.skip(f"no PostgreSQL server answers at {PG_URL}")
    port = free_port()
    fill = {"ws": str(workspace), "ro": str(readonly_dir), "port": str(port)}
    argv = [a.replace("{ws}", fill["ws"]).replace("{ro}", fill["ro"]).replace("{port}", fill["port"]) for a in argv]
    message = message.replace("{ws}", fill["ws"]).replace("{port}", fill["port"])
    monkeypatch.setenv("NORMBENCH_CONFIG_DIR", str(workspace / "configs"))
    monkeypatch.chdir(workspace)  # relative defaults (runs/, results/) would land here and be seen
    before = snapshot(workspace)
    stray = Path("/nonexistent-nb")
    assert not stray.exists(), f"{stray} is left over from an earlier run: remove it"
    try:
        code = main(argv)
    finally:
        if stray.exists():  # what the bug did (sweep.storage in a missing directory): clean up, then fail
            shutil.rmtree(stray)
            pytest.fail(f"{stray} was created")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert snapshot(workspace) == before
    if readonly_dir is not None:
        assert not any(readonly_dir.iterdir())
