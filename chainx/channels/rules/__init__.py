"""Channel rules by op family; `chainx.channels.registry` maps op types to them."""
