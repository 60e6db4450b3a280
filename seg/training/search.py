"""``seg.search``: an Optuna study over ``seg.train``'s config, one training run per trial.

The study's settings and search space are ``cfg.search`` (``conf/search/``). Each trial's sampled
values become overrides of ``conf/train.yaml``, after the command line's own (so a categorical
over a config group, ``loss``, picks an option of it), and the trial runs as a job of a multirun
does: in its own run directory inside the search folder (``<search folder>/<trial number>``, with
its config, log, checkpoints and metrics: a ``RunDir``). After each validation the trial
reports the monitored metric to the study, whose pruner may stop it (``PruneTrial``). The search
ends with the sweep summary (``seg.training.sweeps``) and the best trial's command line.

The study is kept in an Optuna storage (by default ``SweepDir.study`` in the search folder, which
is named after the study): the same command line run again resumes it and runs only the trials
still missing up to ``search.n_trials``.
"""

from __future__ import annotations

import inspect
import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, run_job
from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from hydra.types import HydraContext, RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import TrialState

from seg.artifacts import write_json
from seg.config_errors import config_error_message
from seg.errors import ConfigError, first_line, print_error
from seg.metrics import DEFAULT_MONITOR
from seg.overrides import override_key
from seg.rundir import RunDir, SweepDir
from seg.training.callbacks import stop_asked
from seg.training.checks import validate_train_config
from seg.training.debugging import report_debug_changes
from seg.training.sweeps import columns, markdown, summarize_sweep, sweep_job

log = logging.getLogger(__name__)

#: The config every trial composes, and the name of its log file (``train.log``).
TRAIN = "train"
#: The key of the search's own settings in the composed config (``conf/search/``).
SEARCH = "search"
#: A pruned trial's ``status`` in its metrics (``RunDir.metrics``) and in the summary table.
PRUNED = "pruned"
#: Trials that count towards ``search.n_trials``.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: The study's direction for each ``callbacks.model_checkpoint.mode``.
DIRECTIONS = {"max": "maximize", "min": "minimize"}

#: ``type:`` of a search parameter -> the Optuna distribution its other keys are the arguments of.
DISTRIBUTIONS: dict[str, type[BaseDistribution]] = {
    "float": FloatDistribution,
    "int": IntDistribution,
    "categorical": CategoricalDistribution,
}


def _parameters(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``search.params`` flattened to ``{override key: spec}``: a mapping with ``type`` is a spec,
    any other mapping a level of the key's path (``model: {optimizer: {lr: ...}}``)."""
    found: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and "type" not in value:
            found.update(_parameters(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def search_space(params: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each searched key, from ``search.params``.

    Each parameter sits at the path of the ``seg.train`` key (or config group) it sets, as
    ``{type: float|int, low, high, log, step}`` or ``{type: categorical, choices: [...]}``: the
    arguments of Optuna's distribution of that type. Raises ``ConfigError`` naming the key.
    """
    space: dict[str, BaseDistribution] = {}
    for name, spec in _parameters(params).items():
        where = f"{SEARCH}.params.{name}"
        if not isinstance(spec, Mapping) or spec.get("type") not in DISTRIBUTIONS:
            raise ConfigError(
                f"{where}={spec!r} is not a parameter: write {{type: {'|'.join(DISTRIBUTIONS)}, ...}}, "
                "e.g. {type: float, low: 1e-4, high: 1e-1, log: true} or {type: categorical, choices: [a, b]}"
            )
        distribution = DISTRIBUTIONS[spec["type"]]
        arguments = {key: value for key, value in spec.items() if key != "type"}
        accepted = list(inspect.signature(distribution).parameters)
        unknown = [key for key in arguments if key not in accepted]
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]} is not a setting of a {spec['type']} parameter: "
                f"use {', '.join(accepted)}"
            )
        try:
            space[name] = distribution(**arguments)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from None
    if not space:
        raise ConfigError(
            f"{SEARCH}.params is empty: add what to search, e.g. "
            f"'+{SEARCH}.params.loss={{type: categorical, choices: [dice, dice_ce]}}'"
        )
    return space


def override(key: str, value: Any) -> str:
    """``key=value`` as Hydra reads it back (a float keeps every digit, ``None`` is ``null``)."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}={text}"


def train_overrides(task_overrides: Sequence[str], space: Mapping[str, BaseDistribution]) -> list[str]:
    """The command line's overrides of ``seg.train``: all but the search's own (``search.*``).

    A key both searched and set on the command line, and ``resume=``, are errors.
    """
    kept = []
    for item in task_overrides:
        key = override_key(item)
        if key == SEARCH or key.startswith(f"{SEARCH}."):
            continue
        if key in space:
            raise ConfigError(
                f"{key} is searched ({SEARCH}.params.{key}) and also set on the command line ({item}): "
                "leave out one of them"
            )
        if key == "resume":
            raise ConfigError(
                "resume= continues one training run; a search resumes from its storage: "
                "run the same command line again"
            )
        kept.append(item)
    return kept


def _check_one_process(trainer: DictConfig) -> None:
    """Trials run one after another in this process: no multi-process trainer."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    one = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    if not one or nodes != 1:
        raise ConfigError(
            f"seg.search trains its trials one after another in this process, on one device: "
            f"set trainer.devices=1 and trainer.num_nodes=1 (not {devices} and {nodes})"
        )


def _build(key: str, node: DictConfig, **arguments: Any) -> Any:
    """``instantiate(node)``; a wrong ``_target_`` or argument is a ``ConfigError`` naming ``key``."""
    try:
        return instantiate(node, **arguments)
    except InstantiationException as error:
        raise ConfigError(f"{key}: {first_line(error.__cause__ or error)}") from None


def _sampler(node: DictConfig, number: int) -> optuna.samplers.BaseSampler:
    """``search.sampler`` for trial ``number``, seeded with ``seed + number``: each trial's values
    depend on the seed and the trials before it, so a resumed study goes on as one unbroken run
    would (and never repeats the start-up trials it began with)."""
    seed = node.get("seed")
    return _build(f"{SEARCH}.sampler", node, **({} if seed is None else {"seed": int(seed) + number}))


def _pruner(node: DictConfig | None) -> optuna.pruners.BasePruner:
    """``search.pruner``; null never prunes."""
    return optuna.pruners.NopPruner() if node is None else _build(f"{SEARCH}.pruner", node)


class PruneTrial(pl.Callback):
    """Reports ``monitor`` to an Optuna trial after every validation (step: the epoch), and ends
    the run with ``optuna.TrialPruned`` when the study's pruner says the trial is unpromising.

    Training stops as early stopping stops it, at the end of that epoch, after the checkpoint
    callback has saved it: the pruned run's best checkpoint, TorchScript model and metrics agree. The
    exception comes as training ends, so the run is neither tested nor counted as finished.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.reason: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.trial.report(value, trainer.current_epoch)
        if self.reason is None and self.trial.should_prune():
            self.reason = f"pruned at epoch {trainer.current_epoch} ({self.monitor} {value:.4f})"
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reason is not None:
            raise optuna.TrialPruned(self.reason)


def _record_pruned(run_dir: Path, reason: str) -> None:
    """The pruned run's metrics say so (the run wrote them as failed: it ended with an exception)."""
    run = RunDir.of(run_dir)
    metrics = run.read_metrics() or {}
    metrics.update(status=PRUNED, stop_reason=reason, error=None)
    write_json(run.metrics, metrics)


@dataclass(frozen=True)
class Search:
    """What every trial of one search shares."""

    settings: DictConfig  # cfg.search
    space: dict[str, BaseDistribution]
    overrides: list[str]  # the command line's seg.train overrides
    hydra: DictConfig  # the search command's own Hydra config
    sweep: SweepDir
    monitor: str

    @property
    def storage(self) -> str:
        """``search.storage``, or the SQLite file in the search folder (``SweepDir.study``)."""
        return self.settings.storage or f"sqlite:///{self.sweep.study}"

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """``conf/train.yaml`` with the command line's Hydra overrides and ``overrides``, its
        ``hydra`` node included, as Hydra composes a job of a multirun."""
        loader = GlobalHydra.instance().config_loader()
        try:
            return loader.load_configuration(
                config_name=TRAIN, overrides=[*self.hydra.overrides.hydra, *overrides], run_mode=RunMode.RUN
            )
        except (ConfigCompositionException, OverrideParseException) as error:
            raise ConfigError(config_error_message(error, TRAIN)) from None

    def check_trials(self) -> None:
        """Compose and check a trial's config at every end of the search space (each parameter's
        low and high, every choice), so that a wrong key, option or value stops the search now."""
        first = {name: _ends(d)[0] for name, d in self.space.items()}
        corners = [first, *({**first, name: v} for name, d in self.space.items() for v in _ends(d)[1:])]
        for values in corners:
            sampled = [override(name, value) for name, value in values.items()]
            try:
                cfg = self.compose([*self.overrides, *sampled])
                with open_dict(cfg):
                    del cfg["hydra"]
                validate_train_config(cfg)
            except ConfigError as error:
                raise ConfigError(f"a trial with {' '.join(sampled)} cannot run: {error}") from None
        _sampler(self.settings.sampler, 0)
        _pruner(self.settings.get("pruner"))

    def run_trial(self, study: optuna.Study) -> TrialState:
        """Ask the study for a trial, train it in its run dir, tell the study how it ended."""
        study.sampler = _sampler(self.settings.sampler, len(study.get_trials(deepcopy=False)))
        trial = study.ask(self.space)

        def task(cfg: DictConfig) -> tuple[TrialState, float | None, str]:
            job = HydraConfig.get()
            overrides = list(job.overrides.task)
            trial.set_user_attr("run_dir", job.runtime.output_dir)
            trial.set_user_attr("overrides", overrides)
            report_debug_changes(cfg, overrides)
            try:
                value = sweep_job(cfg, overrides, [PruneTrial(trial, self.monitor)], (optuna.TrialPruned,))
            except optuna.TrialPruned as pruned:
                _record_pruned(Path(job.runtime.output_dir), str(pruned))
                return TrialState.PRUNED, None, str(pruned)
            if math.isnan(value):
                return TrialState.FAIL, None, f"failed (see {job.runtime.output_dir})"
            return TrialState.COMPLETE, value, f"completed: {self.monitor} {value:.4f}"

        try:
            config = self.compose([*self.overrides, *(override(k, v) for k, v in trial.params.items())])
            with open_dict(config):  # what Hydra's launcher sets for job number ``trial.number``
                config.hydra.sweep.dir = str(self.sweep.path)
                config.hydra.job.num = trial.number
                config.hydra.job.id = str(trial.number)
                config.hydra.job.name = TRAIN
            context = HydraContext(GlobalHydra.instance().config_loader(), Callbacks(config))
            job = run_job(task, config, "hydra.sweep.dir", "hydra.sweep.subdir", context)
            state, value, outcome = job.return_value
        except BaseException:  # Ctrl-C, SIGTERM, an error outside the training: the trial did not end
            study.tell(trial, state=TrialState.FAIL)
            raise
        finally:
            configure_log(self.hydra.job_logging, self.hydra.verbose)  # back to the search's log
        study.tell(trial, value, state=state)
        values = " ".join(override(k, v) for k, v in trial.params.items())
        log.info("Trial %d %s, with %s", trial.number, outcome, values)
        return state


def _ends(distribution: BaseDistribution) -> list[Any]:
    """The values at the ends of a distribution: low and high, or every choice."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]  # type: ignore[attr-defined]


def open_study(search: Search, direction: str) -> optuna.Study:
    """The study ``search.settings`` names, created or loaded from its storage; a loaded one must
    have been started with the same seg.train overrides, search space and direction."""
    settings, storage = search.settings, search.storage
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=settings.study_name,
            direction=direction,
            pruner=_pruner(settings.get("pruner")),
            load_if_exists=True,
        )
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"{SEARCH}.storage={storage}: cannot open a study there: {first_line(error)}"
        ) from None
    started = {
        "overrides": sorted(search.overrides),
        "params": {name: distribution_to_json(d) for name, d in search.space.items()},
    }
    recorded = study.user_attrs.get("seg")
    differences = []
    if recorded is not None and recorded["overrides"] != started["overrides"]:
        added = [o for o in started["overrides"] if o not in recorded["overrides"]]
        left_out = [o for o in recorded["overrides"] if o not in started["overrides"]]
        added_text, left_out_text = " ".join(added) or "none", " ".join(left_out) or "none"
        differences.append(f"seg.train overrides added: {added_text}, left out: {left_out_text}")
    if recorded is not None and recorded["params"] != started["params"]:
        differences.append(f"another {SEARCH}.params")
    if study.direction.name.lower() != direction:
        differences.append(f"it is to {study.direction.name.lower()}, this command would {direction}")
    if differences:
        raise ConfigError(
            f"study {settings.study_name} in {storage} was started otherwise ({'; '.join(differences)}): "
            f"resume it with its own command line, or start another with {SEARCH}.study_name=NAME"
        )
    if recorded is None:
        study.set_user_attr("seg", started)
    return study


def _report(study: optuna.Study, search: Search) -> float | None:
    """Write and print the summary table; print the best trial and its command line."""
    rows = summarize_sweep(search.sweep.path)
    if rows:
        print(f"\nSearch summary ({search.sweep.summary_md}):\n{markdown(rows, columns(rows))}", flush=True)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"No trial of study {study.study_name} completed yet.", flush=True)
        return None
    best = study.best_trial
    overrides = best.user_attrs.get("overrides") or [
        *search.overrides,
        *(override(k, v) for k, v in best.params.items()),
    ]
    print(
        f"Best trial: {best.number} of study {study.study_name}, {search.monitor} {best.value:.4f} "
        f"({best.user_attrs.get('run_dir', '')}). Train it again with:\n"
        f"  {shlex.join(['python', '-m', 'seg.train', *overrides])}",
        flush=True,
    )
    return best.value


def search(cfg: DictConfig) -> float | None:
    """Run or resume the study ``cfg.search`` describes, over ``cfg``'s seg.train settings.

    Returns the best trial's value (None while no trial completed). Mistakes in the search's
    settings raise ``ConfigError`` before any trial; when trials of this run failed, the search
    ends with exit status 1 after the summary.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        raise ConfigError("seg.search runs one study, which proposes the trials: leave out -m")
    settings = cfg[SEARCH]
    n_trials = settings.n_trials
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 0:
        raise ConfigError(f"{SEARCH}.n_trials={n_trials!r} is not valid: expected an integer >= 0")
    mode = OmegaConf.select(cfg, "callbacks.model_checkpoint.mode", default="max")
    if mode not in DIRECTIONS:
        raise ConfigError(f"callbacks.model_checkpoint.mode={mode!r} is not valid: expected max or min")
    _check_one_process(cfg.trainer)
    space = search_space(OmegaConf.to_container(settings.params, resolve=True))  # type: ignore[arg-type]
    plan = Search(
        settings=settings,
        space=space,
        overrides=train_overrides(hydra_cfg.overrides.task, space),
        hydra=hydra_cfg,
        sweep=SweepDir(Path(hydra_cfg.runtime.output_dir)),
        monitor=OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=DEFAULT_MONITOR),
    )
    plan.check_trials()
    optuna.logging.disable_default_handler()  # Optuna's lines go to the console and the search's log
    optuna.logging.enable_propagation()
    study = open_study(plan, DIRECTIONS[mode])

    log.info(
        "Study %s (%s): %s the best %s", study.study_name, plan.storage, DIRECTIONS[mode], plan.monitor,
    )  # fmt: skip
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("Trial %d was left running by a search that stopped: marked failed", stale.number)
        study.tell(stale.number, state=TrialState.FAIL)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    missing = max(0, n_trials - finished)
    if finished:
        log.info(
            "resuming study %s with %d finished trials: %d more to reach %s.n_trials=%d",
            study.study_name, finished, missing, SEARCH, n_trials,
        )  # fmt: skip
    failed = 0
    try:
        for _ in range(missing):
            failed += plan.run_trial(study) == TrialState.FAIL
            asked = stop_asked()
            if asked is not None:  # it came in a trial's last batches, which then finished
                raise SystemExit(128 + int(asked))
    except (KeyboardInterrupt, SystemExit):
        log.info("Search stopped: the same command line resumes it (a trial it cut short is marked failed)")
        raise
    finally:
        best = _report(study, plan)
    if failed:
        print_error(f"{failed} of {missing} trials failed (see the table)")
        raise SystemExit(1)
    return best
