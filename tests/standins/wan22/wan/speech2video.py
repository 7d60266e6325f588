"""``WanS2V``'s name and constructor (wan/speech2video.py upstream). Speech-to-video is not part of
the stand-in: building one raises NotImplementedError."""


class WanS2V:

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False, use_sp=False,
                 t5_cpu=False, init_on_cpu=True, convert_model_dtype=False):
        raise NotImplementedError("stand-in: WanS2V (s2v-14B) is not implemented")
