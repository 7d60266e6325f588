"""``WanAnimate``'s name and constructor (wan/animate.py upstream). Animate is not part of the
stand-in: building one raises NotImplementedError."""


class WanAnimate:

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False, use_sp=False,
                 t5_cpu=False, init_on_cpu=True, convert_model_dtype=False, use_relighting_lora=False):
        raise NotImplementedError("stand-in: WanAnimate (animate-14B) is not implemented")
