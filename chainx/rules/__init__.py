"""Channel rules by op family; `chainx.channel_rules` holds the registry."""
