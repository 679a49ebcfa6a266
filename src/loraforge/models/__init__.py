"""Model loading: the embedded Gemma 3 270M, GGUF files, Hugging Face folders and hub ids."""
