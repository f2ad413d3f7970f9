"""The SelfieLessActs microservices (users and acts) and the code they share."""
