"""stepsnap's Kale support: notebook variable flow (analysis), the marshal
folder (marshal_dir) and the runtime of one notebook step (step)."""
