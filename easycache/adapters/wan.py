"""What every Wan DiT (Wan2.1, Wan2.2) has in common: the pipelines call it twice per step,
conditional first, then unconditional, as ``model(x_list, t=..., **kw) -> list of fp32``, and
it loops ``for block in self.blocks: x = block(x, **kwargs)`` (``kwargs["e"]`` is the projected
time embedding e0)."""

from easycache.runtime.blocks import BlockLayout
from easycache.runtime.model import ModelIO

WAN_BRANCHES = ("cond", "uncond")

WAN_IO = ModelIO(inputs_of=lambda args, kwargs: list(args[0] if args else kwargs["x"]),
                 outputs_of=lambda output: output,
                 make_output=lambda tensors, args, kwargs: tensors,
                 timestep_of=lambda args, kwargs: args[1] if len(args) > 1 else kwargs.get("t"))


def wan_block_layout(dit) -> BlockLayout:
    """The block loop of a WanModel; TeaCache's indicator is the time embedding e (captured as
    the model computes it: under FSDP its weights exist only inside the forward), or the
    projection e0 the blocks receive."""
    def time_embedding(hooks):
        captured = {}
        hooks.append(dit.time_embedding.register_forward_hook(
            lambda module, inputs, output: captured.__setitem__("e", output)))
        return lambda block_args, block_kwargs: [captured["e"]]
    return BlockLayout(lists=[dit.blocks], names=["blocks"], indicators={
        "modulated": time_embedding,
        "modulated-projected": lambda hooks: lambda block_args, block_kwargs: [block_kwargs["e"]],
    })
