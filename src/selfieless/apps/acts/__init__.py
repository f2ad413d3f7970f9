"""The acts microservice: categories, acts (photos of good deeds), upvotes."""
