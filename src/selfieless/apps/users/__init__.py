"""The users microservice: sign-up, removal and the list of usernames."""
