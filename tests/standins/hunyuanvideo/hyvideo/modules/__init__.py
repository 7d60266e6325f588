from .models import HUNYUAN_VIDEO_CONFIG, HYVideoDiffusionTransformer


def load_model(args, in_channels, out_channels, factor_kwargs):
    """The model named by --model, at the stand-in's tiny size (the block counts and widths of
    the real configs are kept in HUNYUAN_VIDEO_CONFIG only for the CLI's choices)."""
    if args.model not in HUNYUAN_VIDEO_CONFIG:
        raise NotImplementedError()
    guidance_embed = HUNYUAN_VIDEO_CONFIG[args.model].get("guidance_embed", False)
    return HYVideoDiffusionTransformer(args, in_channels=in_channels, out_channels=out_channels,
                                       guidance_embed=guidance_embed, **factor_kwargs)
