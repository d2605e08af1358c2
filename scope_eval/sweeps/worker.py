"""The sweep worker: one process (per rank) that loads a model once and evaluates many cells on it.

`python -m scope_eval.sweeps.worker JOB.json` (started by the runner, `isolation: worker`). The job lists
cells of one model configuration, each as the lmms-eval command-line arguments the process route would
launch (`python -m lmms_eval <arguments>`), its scratch folder and its log. The worker evaluates them in
order, or, when the job says `feed` (`parallel: cells`: several workers share the sweep's cells), those
whose index the runner writes to its stdin, one at a time, until stdin closes; there a line `job PATH`
switches it to the next sweep of the same command (`scope-eval sweep A.yaml B.yaml`: another model, loaded
by the next cell as in a fresh worker; the process start is what is saved). For each cell:

1. its arguments are parsed by lmms-eval's own parser; the model args that choose the model (all but the
   pruning keys) must equal those of the loaded model, the rest become the cell's pruning plan, validated
   exactly as the plugin's constructor validates it;
2. the loaded wrapper is pruned with that plan (`PrunedWrapper.switch_plan`: remove the previous pruning,
   apply this one: instance-level and reversible);
3. lmms-eval's own `simple_evaluate` runs on the model instance, with the arguments the CLI would pass, and
   the results and samples are written by lmms-eval's own `EvaluationTracker`, as `lmms_eval` writes them
   (same files, same folder layout): the runner reads and seals them exactly as after a process launch;
4. the pruning is removed and the model is checked to be back in its unpruned state (every parameter and
   buffer the same tensor, unmodified in place; every module's hooks and instance attributes, and the
   processor's, as they were after loading). A model that is not is never used again: the worker stops.

The task index (lmms-eval's `TaskManager`) is built once per worker, or read from the job's
`task_index_cache` folder when an earlier process of the same output folder built it for the same task
files (`scope_eval.lmms.task_index`); each cell's tasks are loaded from it (the datasets library caches the
data itself).

Output: a cell's log receives everything the process writes while that cell runs (file descriptors 1 and 2
are pointed at it), the model load included for the first cell. Events for the runner go, as JSON lines,
to the job's events file (rank 0 only): `loaded`, `start`, `documents` (per answered document of this
rank's shard), `end` (with the cell's own seconds), `restore_failed`.

Errors. With one process, an exception inside a cell fails that cell only (traceback in its log) and the
worker goes on. With several processes (data parallel, see runner.py) the other ranks would wait for the
failed one forever, so any error ends the worker; the runner treats that as a crash of that cell.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from ..lmms.errors import RunAborted
from ..lmms.options import pruning_keys

RESTORE_FAILED_EXIT = 3
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
_MODULE_STORES = {"_parameters", "_buffers", "_modules", *_HOOK_DICTS}
# lmms-eval CLI arguments that `cli_evaluate_single` hands to `simple_evaluate` under the same name
_PASSED_AS_IS = (
    "num_fewshot", "batch_size", "max_batch_size", "device", "use_cache", "limit", "offset", "check_integrity",
    "write_out", "log_samples", "system_instruction", "apply_chat_template", "fewshot_as_multiturn", "gen_kwargs",
    "verbosity", "predict_only", "force_simple", "launcher_args", "repeats", "baseline", "max_tokens",
)  # fmt: skip


def restore_state(model: Any, *objects: Any) -> dict[str, object]:
    """What an exact restore must bring back: per parameter and buffer its identity, storage, shape, dtype
    and in-place version counter; per module its hooks and instance attributes; per other object (the
    processor) its instance attributes. Instance attributes are compared by name and, for callables (the
    patches pruning installs), by identity. Cheap: no tensor is read, so it runs between cells on a 7B model."""
    state: dict[str, object] = {}
    for name, module in model.named_modules():
        hooks = tuple((store, tuple(getattr(module, store, {}) or {})) for store in _HOOK_DICTS)
        state[f"module {name or '<root>'}"] = (type(module).__name__, _attributes(module), hooks)
    for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in tensors:
            state[f"{kind} {name}"] = (id(tensor), tensor.data_ptr(), tuple(tensor.shape), str(tensor.dtype), tensor._version)
    for index, obj in enumerate(objects):
        if obj is not None:
            state[f"object {index} ({type(obj).__name__})"] = _attributes(obj)
    return state


def restore_problems(loaded: dict[str, object], settled: dict[str, object] | None, now: dict[str, object], leftovers: list[str]) -> list[str]:
    """Why the model is not back in its unpruned state after a cell (empty when it is).

    `loaded`: the state right after loading; its tensors must be untouched. Its modules cannot be compared
    as they are: transformers installs hooks of its own on a model's first forward (output capturing), and
    keeps them. So modules and objects are compared with `settled`, the state after the first cell's
    restore (None while that is the cell being checked), and `leftovers` (hooks and patches of this package
    still on the model, see `pruning_leftovers`) must be empty on every cell, the first included."""
    problems = state_differences(_tensors(loaded), _tensors(now))
    if settled is not None:
        problems += state_differences(settled, now)
    return problems + leftovers


def _tensors(state: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in state.items() if name.startswith(("parameter ", "buffer "))}


def pruning_leftovers(model: Any, *objects: Any) -> list[str]:
    """Hooks and instance attributes of the model's modules (and of `objects`) that are callables defined
    in this package: what a pruning that was not fully removed leaves behind."""
    found = []
    for name, module in model.named_modules():
        for store in _HOOK_DICTS:
            for hook in (getattr(module, store, {}) or {}).values():
                if _ours(hook):
                    found.append(f"module {name or '<root>'}: a {store[1:]} entry of this package is still installed")
        found += [f"module {name or '<root>'}: attribute {key} is still patched" for key, value in vars(module).items() if _ours(value)]
    for obj in objects:
        if obj is not None:
            found += [f"{type(obj).__name__}: attribute {key} is still patched" for key, value in vars(obj).items() if _ours(value)]
    return found


def _ours(value: Any) -> bool:
    """Whether a callable comes from scope_eval (a bound method of one of its objects, a function or closure
    it defined, a partial of either)."""
    if not callable(value) or isinstance(value, type):
        return False
    value = getattr(value, "func", value)  # functools.partial
    owner = getattr(value, "__self__", None)
    modules = (getattr(getattr(value, "__func__", value), "__module__", None), type(owner).__module__ if owner is not None else None)
    return any(isinstance(module, str) and module.split(".")[0] == "scope_eval" for module in modules)


def state_differences(before: dict[str, object], after: dict[str, object], most: int = 5) -> list[str]:
    """Where two restore states differ, by name (at most `most`)."""
    names = sorted(set(before) | set(after))
    changed = [name for name in names if before.get(name) != after.get(name)]
    return [f"{name}: {'missing' if name not in after else 'new' if name not in before else 'changed'}" for name in changed[:most]]


def _attributes(obj: Any) -> tuple:
    values = vars(obj) if hasattr(obj, "__dict__") else {}
    return tuple(sorted((key, id(value) if callable(value) else None) for key, value in values.items() if key not in _MODULE_STORES))


class Events:
    """The runner's channel: JSON lines appended to a file (rank 0 only; other ranks write nothing)."""

    def __init__(self, path: Path | None):
        self._handle = path.open("a") if path is not None else None

    def send(self, event: str, **fields: object) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (file descriptors 1 and 2, so C libraries and child threads
    too) at `log`, appended to, for the duration."""
    saved = os.dup(1), os.dup(2)
    try:
        _point_output_at(log)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _point_output_at(log: Path) -> None:
    """File descriptors 1 and 2 appended to `log` from now on (what was buffered goes where it was bound)."""
    sys.stdout.flush()
    sys.stderr.flush()
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)


class Worker:
    def __init__(self, job: dict[str, Any]):
        import torch
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs
        from lmms_eval import __main__ as lmms_cli

        # As `python -m lmms_eval` does before its first evaluation (starts the process group when launched
        # with several processes).
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=60000))])
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.job = job
        self.events = Events(Path(job["events"]) if self.rank == 0 else None)
        self.parser = _lmms_eval_parser(lmms_cli)
        self.lm: Any = None
        self.loaded_with: tuple[str, dict] | None = None
        self.loaded_state: dict[str, object] | None = None
        self.settled_state: dict[str, object] | None = None  # after the first cell's restore
        self.task_manager: Any = None
        self.include_path: Any = None
        self.load_seconds = 0.0  # of the model load within the current cell (the first one), if any

    def run(self) -> int:
        for index in self._cell_order():
            cell = self.job["cells"][index]
            Path(cell["work_dir"]).mkdir(parents=True, exist_ok=True)
            with output_to(Path(cell["log"])):
                print("# run in the sweep worker (one model load for all its cells), as: python -m lmms_eval " + shlex.join(cell["argv"]), flush=True)
                self.events.send("start", cell=index)
                started, self.load_seconds = time.monotonic(), 0.0
                error = self._evaluate(index, cell)
                seconds = time.monotonic() - started - self.load_seconds  # the cell's own time, not the model load
                problems = self._restore()
            if problems:  # this cell ran on a model checked clean before it: its results stand; no later cell may run here
                self.events.send("end", cell=index, ok=error is None, seconds=seconds, error=error)
                self.events.send("restore_failed", cell=index, detail=problems)
                return RESTORE_FAILED_EXIT
            self.events.send("end", cell=index, ok=error is None, seconds=seconds, error=error)
            if error is not None and self.world_size > 1:
                return 1
        return 0

    def _cell_order(self) -> Iterator[int]:
        """Every cell in order; with `feed` (whole cells spread over several workers, see runner.py), the
        indices the runner writes to stdin, one per line, each once the previous cell has ended, until EOF.
        A line `job PATH` hands this worker the next sweep of the same command: its cells follow."""
        if not self.job.get("feed"):
            yield from range(len(self.job["cells"]))
            return
        for line in sys.stdin:
            if line.startswith("job "):
                self._take_job(Path(line[4:].strip()))
            else:
                yield int(line)

    def _take_job(self, path: Path) -> None:
        """Go on with another sweep's job (another model configuration, another output folder): the loaded
        model is dropped and its memory freed, the next cell loads the new job's model, exactly as the
        first cell of a fresh worker does. What is saved is the process start (imports: most of a
        worker's start-up on the toy)."""
        self._unload()
        self.job = json.loads(path.read_text())
        self.events.close()
        self.events = Events(Path(self.job["events"]) if self.rank == 0 else None)
        if self.job.get("worker_log"):  # this process's own output now goes to the new sweep's worker log
            _point_output_at(Path(self.job["worker_log"]))

    def _unload(self) -> None:
        if self.lm is None:
            return
        import torch

        self.lm = self.loaded_with = self.loaded_state = self.settled_state = None
        self.task_manager = self.include_path = None
        gc.unfreeze()  # the load froze the model's objects (see _load): let the collector free them
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _evaluate(self, index: int, cell: dict[str, Any]) -> str | None:
        from loguru import logger

        try:
            args = self.parser.parse_args(cell["argv"])
            logger.remove()  # as the lmms-eval CLI does: its log lines on stdout, here the cell's log
            logger.add(sys.stdout, colorize=False, level=args.verbosity)
            self._load(args)
            self.lm.on_answer = lambda done, total: self.events.send("documents", cell=index, done=done, total=total)
            plan, _ = self.lm.cell_plan(self._kwargs(args))
            self.lm.switch_plan(plan)
            self._evaluate_cell(args)
            return None
        except (Exception, RunAborted) as error:
            traceback.print_exc()
            return f"{type(error).__name__}: {error}"

    def _load(self, args: Any) -> None:
        """Load the model on the first cell; later cells must ask for the same model."""
        from lmms_eval import models
        from lmms_eval.tasks import TaskManager

        from ..lmms.task_index import CachedTaskManager

        kwargs = self._kwargs(args)
        loading = (args.model, {key: value for key, value in kwargs.items() if key not in pruning_keys()})
        if self.lm is not None:
            if loading != self.loaded_with:
                raise ValueError(f"this cell's model ({loading}) is not the loaded one ({self.loaded_with}); one worker runs one model configuration")
            if args.include_path != self.include_path:
                raise ValueError(f"this cell's include_path {args.include_path} is not the worker's {self.include_path}")
            return
        started = time.monotonic()
        # Loaded unpruned (method none), pruned per cell: a cell whose plan fails then fails alone.
        self.lm = models.get_model(args.model, args.force_simple).create_from_arg_string(
            ",".join(f"{key}={value}" for key, value in {**loading[1], "method": "none"}.items()),
            {"batch_size": args.batch_size, "max_batch_size": args.max_batch_size, "device": args.device},
        )
        self.lm.unprune()
        self.loaded_with = loading
        self.loaded_state = restore_state(*self._restorable())
        self.include_path = args.include_path
        if self.job.get("task_index_cache"):  # built by the first process of the sweep's output folder, read by the rest
            self.task_manager = CachedTaskManager(
                args.verbosity, include_path=args.include_path, model_name=args.model, cache_dir=self.job["task_index_cache"]
            )
        else:
            self.task_manager = TaskManager(args.verbosity, include_path=args.include_path, model_name=args.model)
        # Everything alive now (modules, weights, the task index: about half a million objects) lives as long
        # as the worker: moved out of the collector's sight, the full collection lmms-eval runs after each
        # evaluation scans only what a cell created (0.25-0.3 s less per cell on the toy).
        gc.freeze()
        self.load_seconds = time.monotonic() - started
        self.events.send("loaded", seconds=self.load_seconds, pid=os.getpid())  # which process: a worker may serve several sweeps

    def _kwargs(self, args: Any) -> dict[str, Any]:
        from lmms_eval.utils import simple_parse_args_string

        return simple_parse_args_string(args.model_args)

    def _evaluate_cell(self, args: Any) -> None:
        """What `lmms_eval.__main__.cli_evaluate_single` does for one run, on the loaded model instance."""
        import torch
        from lmms_eval import evaluator, utils
        from lmms_eval.evaluator import request_caching_arg_to_dict
        from lmms_eval.loggers import EvaluationTracker

        tracker = EvaluationTracker(output_path=args.output_path)
        wanted = args.tasks.split(",")
        tasks = self.task_manager.match_tasks(wanted)
        missing = [task for task in wanted if task not in tasks]
        if missing:
            raise ValueError(f"Tasks not found: {', '.join(missing)} (include_path {args.include_path})")
        datetime_str = utils.get_datetime_str(timezone=args.timezone)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        same_name = {name: getattr(args, name) for name in _PASSED_AS_IS}
        results = evaluator.simple_evaluate(
            model=self.lm,
            model_args=args.model_args,  # names the output folder after the checkpoint, as on the CLI
            tasks=tasks,
            evaluation_tracker=tracker,
            task_manager=self.task_manager,
            random_seed=args.seed[0],
            numpy_random_seed=args.seed[1],
            torch_random_seed=args.seed[2],
            fewshot_random_seed=args.seed[3],
            cli_args=args,
            datetime_str=datetime_str,
            distributed_executor_backend="torchrun" if distributed else "accelerate",
            process_docs_parallel=getattr(args, "process_docs_parallel", 4),
            **same_name,
            **request_caching_arg_to_dict(cache_requests=args.cache_requests),
        )
        if results is None:  # ranks other than 0
            return
        # The tracker keeps what it was given as the model to describe the run; the CLI gives the model's
        # name, which it then copies: never copy the (pruned) model object itself.
        tracker.general_config_tracker.model_source = args.model
        samples = results.pop("samples") if args.log_samples else None
        tracker.save_results_aggregated(results=results, samples=samples, datetime_str=datetime_str)
        if args.log_samples:
            for task_name in results["configs"]:
                tracker.save_results_samples(task_name=task_name, samples=samples[task_name])

    def _restore(self) -> list[str]:
        """Remove the cell's pruning; why the model is not back in its unpruned state (empty when it is)."""
        if self.lm is None or self.loaded_state is None:
            return []
        try:
            self.lm.unprune()
        except (Exception, RunAborted) as error:
            return [f"removing the pruning failed: {type(error).__name__}: {error}"]
        now = restore_state(*self._restorable())
        problems = restore_problems(self.loaded_state, self.settled_state, now, pruning_leftovers(*self._restorable()))
        if self.settled_state is None and not problems:
            self.settled_state = now
        return problems

    def _restorable(self) -> tuple[Any, Any]:
        """The model and the processor pruning patches (the HF wrapper's; None for the original codebase)."""
        return self.lm.model, getattr(self.lm, "_pruning_processor", None)


def _lmms_eval_parser(lmms_cli: Any):
    """lmms-eval's own argument parser (its function parses sys.argv, so it is handed an empty one)."""
    saved = sys.argv
    sys.argv = ["lmms_eval"]
    try:
        parser, _ = lmms_cli.parse_eval_args()
    finally:
        sys.argv = saved
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m scope_eval.sweeps.worker JOB.json (written by scope-eval sweep)", file=sys.stderr)
        return 2
    return Worker(json.loads(Path(argv[0]).read_text())).run()


if __name__ == "__main__":
    sys.exit(main())
