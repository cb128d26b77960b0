"""Cut a model with several inputs or outputs down to the image input and the class output."""

from __future__ import annotations

import onnx

from chainx.errors import ChainxError
from chainx.onnx.graph import live_nodes
from chainx.onnx.passes.base import ModelPass, PassResult


class SelectIO(ModelPass):
    """Keep one output (the class scores) and the one input it reads (the image).

    `input_name` and `output_name` choose them (--input, --output); without them the model
    must make the choice plain: one output, and one graph input that it reads.
    """

    def __init__(self, input_name: str | None = None, output_name: str | None = None) -> None:
        self.input_name = input_name
        self.output_name = output_name

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        outputs = [o.name for o in graph.output]
        _check_named("--output", self.output_name, outputs, "output")
        if self.output_name is None and len(outputs) > 1:
            raise ChainxError(
                f"the model has {len(outputs)} outputs ({', '.join(outputs)}): say which one "
                "holds the class scores with --output NAME."
            )
        chosen = self.output_name or outputs[0]
        kept = [o for o in graph.output if o.name == chosen]
        nodes = live_nodes(list(graph.node), [chosen])
        initializers = {init.name for init in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        read = {name for node in nodes for name in node.input} | {chosen}
        used = [name for name in inputs if name in read]
        _check_named("--input", self.input_name, inputs, "input")
        if self.input_name is None and len(used) > 1:
            raise ChainxError(
                f"the output {chosen!r} reads {len(used)} inputs ({', '.join(used)}): say "
                "which one is the image with --input NAME."
            )
        image = self.input_name or (used[0] if used else inputs[0])
        others = [name for name in used if name != image]
        if others:
            raise ChainxError(
                f"the output {chosen!r} also reads the inputs {', '.join(others)}; chainx "
                "feeds only the image input. Export the classifier with a single input."
            )
        if len(outputs) == 1 and len(inputs) == 1:
            return PassResult(model, modified=False)
        graph_inputs = [i for i in graph.input if i.name == image or i.name in initializers]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.output[:]
        graph.output.extend(kept)
        del graph.input[:]
        graph.input.extend(graph_inputs)
        return PassResult(model, modified=True)


def _check_named(flag: str, name: str | None, names: list[str], kind: str) -> None:
    """A name the user gave must be one of the model's inputs or outputs."""
    if name is not None and name not in names:
        raise ChainxError(
            f"{flag} {name!r} is not an {kind} of the model; its {kind}s are {', '.join(names)}."
        )
