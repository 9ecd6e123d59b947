"""Two nbgrader preprocessors that ``coursekit grade`` swaps into ``Autograde.autograde_preprocessors``
in place of nbgrader's ``Execute``; everything else (sanitising, overwriting locked cells, saving
grades, feedback) stays nbgrader's own.

- :class:`SandboxedExecute` is nbgrader's ``Execute`` with the kernel started by
  :mod:`coursekit.grading.sandbox` (memory and output limits, no access to the course) in a scratch
  folder that holds only the assignment's support files.
- :class:`ReplayExecution` runs nothing: it takes the outputs of a notebook that
  :class:`SandboxedExecute` already ran (in a separate process, several students at once) and puts
  them into the notebook nbgrader is grading, after checking that every cell's text is identical.
  nbgrader then scores them into the course's own gradebook, one student after another.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Float, Int, List, Unicode


class SandboxedKernelManager(AsyncKernelManager):
    """Starts the ipykernel through ``python -m coursekit.grading.sandbox`` with the limits below."""

    memory_mb = Int(4096, help="data-memory limit of the kernel in MiB (0: none)").tag(config=True)
    output_limit = Int(100_000, help="characters one cell may print (0: no limit)").tag(config=True)
    cell_cpu_limit = Float(0.0, help="CPU seconds one cell may use (0: no limit)").tag(config=True)
    workdir = Unicode(help="the scratch folder the kernel runs in and may write").tag(config=True)
    protect = List(Unicode(), help="paths the kernel must not be able to read").tag(config=True)
    landlock = Bool(True, help="restrict the file system with Linux Landlock where available").tag(config=True)
    started_file = Unicode("", help="a file to record each kernel command in (outside the sandbox)").tag(config=True)

    def format_kernel_cmd(self, extra_arguments=None):
        command = super().format_kernel_cmd(extra_arguments)
        if "ipykernel_launcher" not in command:
            raise RuntimeError(f"coursekit grade runs Python (ipykernel) notebooks; this kernel starts with {command}")
        i = command.index("ipykernel_launcher")
        options = ["--memory-mb", str(self.memory_mb), "--output-limit", str(self.output_limit),
                   "--cell-cpu-limit", repr(float(self.cell_cpu_limit)), "--workdir", self.workdir]
        for path in self.protect:
            options += ["--protect", path]
        if not self.landlock:
            options.append("--no-landlock")
        command = [*command[:i], "coursekit.grading.sandbox", *options, *command[i + 1:]]
        if self.started_file:
            with open(self.started_file, "a") as record:
                record.write(" ".join(command) + "\n")
        return command


class SandboxedExecute(Execute):
    """nbgrader's ``Execute``, with the kernel in ``sandbox_directory`` under :class:`SandboxedKernelManager`.
    Before each cell runs, its index is written to ``progress_file`` (outside the sandbox), so that the
    grader can name the cell in which a kernel died."""

    sandbox_directory = Unicode(help="the folder the kernel runs in").tag(config=True)
    progress_file = Unicode("", help="a file that holds the index of the cell running now").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources):
        resources.setdefault("metadata", {})["path"] = self.sandbox_directory
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if self.progress_file:
            Path(self.progress_file).write_text(f"{index}\n")
        return super().preprocess_cell(cell, resources, index)


class ReplayExecution(NbGraderPreprocessor):
    """Copy the outputs of ``executed_directory/<student>/<notebook>.ipynb`` into the notebook."""

    executed_directory = Unicode(help="where the executed notebooks are, one folder per student").tag(config=True)

    def preprocess(self, nb, resources):
        student = resources["nbgrader"]["student"]
        name = resources["nbgrader"]["notebook"]
        path = Path(self.executed_directory) / student / f"{name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"no executed notebook for {student} at {path}")
        executed = nbformat.read(os.fspath(path), as_version=4)
        if len(executed.cells) != len(nb.cells):
            raise ValueError(f"{path} has {len(executed.cells)} cells, the submission {len(nb.cells)}: not the same notebook")
        for k, (cell, ran) in enumerate(zip(nb.cells, executed.cells)):
            if cell.cell_type != ran.cell_type or cell.source != ran.source:
                raise ValueError(f"cell {k + 1} of {path} differs from the submission: not the same notebook")
            if cell.cell_type == "code":
                cell.outputs = ran.outputs
                cell.execution_count = ran.execution_count
        return nb, resources
