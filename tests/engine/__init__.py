"""The backend and its engine: BaseCache semantics, the dogpile path, fences, Django's own cache tests."""
